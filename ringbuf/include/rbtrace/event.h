// rbtrace/event.h - typed events declared with one macro.
//
//   RBTRACE_EVENT(demo, tick, ((uint64_t, seq))((int32_t, value))((rbtrace::str, who)))
//
// declares `rbtrace_events::demo_tick` with
//   - `record`: the record layout (common header, then the fields; a
//     `rbtrace::str` field is stored as a kernel `__data_loc char[]` u32:
//     offset in the low 16 bits, length with the NUL in the high 16 bits,
//     the bytes after the fixed fields),
//   - a registered type id and the kernel-style `format` text (names,
//     offsets, sizes, signedness, print fmt), so trace-cmd can decode it,
//   - `emit(rb, seq, value, who)`: writes one event (the writer API's rules:
//     any thread or signal handler; no allocation, no system call),
//   - `enable()` / `disable()`: a disabled event costs one load and a branch.
//
// Field types: the fixed-width integer types, bool, and rbtrace::str
// (passed as std::string_view; longer than 65535 bytes is cut, and a string
// followed by other strings is cut so that their 16-bit __data_loc offsets
// still fit).
#pragma once

#include <boost/preprocessor/comma_if.hpp>
#include <boost/preprocessor/seq/for_each.hpp>
#include <boost/preprocessor/seq/for_each_i.hpp>
#include <boost/preprocessor/stringize.hpp>
#include <boost/preprocessor/tuple/elem.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "rbtrace/ring_buffer.h"

namespace rbtrace {

struct str {};  // marker type for a __data_loc char[] field

template <class T>
struct FieldTraits;
#define RBTRACE_FIELD_TRAITS(T, cname, pfmt)                      \
  template <>                                                     \
  struct FieldTraits<T> {                                         \
    using storage = T;                                            \
    using param = T;                                              \
    static constexpr const char* c_name = cname;                  \
    static constexpr const char* fmt = pfmt;                      \
    static constexpr bool is_signed = std::is_signed_v<T>;        \
    static constexpr bool is_string = false;                      \
  };
RBTRACE_FIELD_TRAITS(uint64_t, "u64", "%llu")
RBTRACE_FIELD_TRAITS(int64_t, "s64", "%lld")
RBTRACE_FIELD_TRAITS(uint32_t, "u32", "%u")
RBTRACE_FIELD_TRAITS(int32_t, "s32", "%d")
RBTRACE_FIELD_TRAITS(uint16_t, "u16", "%u")
RBTRACE_FIELD_TRAITS(int16_t, "s16", "%d")
RBTRACE_FIELD_TRAITS(uint8_t, "u8", "%u")
RBTRACE_FIELD_TRAITS(int8_t, "s8", "%d")
RBTRACE_FIELD_TRAITS(bool, "bool", "%d")
#undef RBTRACE_FIELD_TRAITS
template <>
struct FieldTraits<str> {
  using storage = uint32_t;
  using param = std::string_view;
  static constexpr const char* c_name = "__data_loc char[]";
  static constexpr const char* fmt = "%s";
  static constexpr bool is_signed = false;
  static constexpr bool is_string = true;
};

struct EventField {
  const char* c_type;
  const char* name;
  uint32_t offset;
  uint32_t size;
  bool is_signed;
  bool is_string;
  const char* fmt;
};

// A registered event type. Any thread may read it; registration happens
// during static initialization.
struct EventType {
  const char* system = nullptr;
  const char* name = nullptr;
  uint16_t id = 0;
  std::atomic<bool>* enabled = nullptr;
  std::vector<EventField> fields;
  uint32_t fixed_size = 0;  // sizeof(record)

  // The kernel's events/<system>/<name>/format text.
  std::string format() const;
  std::string print_fmt() const;
};

// Registers an event type, assigns its id (from 1000 up, in registration
// order). Returns the id. Thread-safe.
uint16_t register_event(EventType* t);
// All registered types, in id order (the pointers stay valid).
std::vector<const EventType*> registered_events();
const EventType* find_event(uint16_t id);
const EventType* find_event(std::string_view system, std::string_view name);
// Renders a record ("system:name field=value ...") using its registered
// type; bounds-checked: a short or unknown record says so. Any thread.
std::string describe_record(const void* data, uint32_t len);
// The kernel's header_page / header_event format texts.
std::string header_page_format();
std::string header_event_format();

// Marks the calling thread as inside a signal handler while it lives: the
// typed events it writes meanwhile carry kFlagSignal in common_flags
// (trace-cmd prints `h`), whether or not the handler interrupted a write of
// the thread. Without it, only an event written by a handler that
// interrupted a write is flagged (its common_preempt_count is the nesting
// level, 1..); a handler that writes between two of the thread's writes
// cannot be told from the thread otherwise. Put one at the top of each
// handler that traces:
//
//   void on_sigusr1(int) {
//     rbtrace::SignalHandlerScope in_handler;
//     rbtrace_events::app_signal::emit(rb, ...);
//   }
//
// Nests (a handler interrupting a handler). Async-signal-safe: it sets a
// byte of the thread's state; no system call, no allocation.
class SignalHandlerScope {
 public:
  SignalHandlerScope() noexcept : prev_(detail::tls_state.common_flags) {
    detail::tls_state.common_flags = prev_ | kFlagSignal;
    // A compiler fence: the flag is set before any of the handler's
    // writes (pairs with the one in the destructor; same thread, so no
    // hardware fence is needed).
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  ~SignalHandlerScope() {
    // Pairs with the constructor's: the handler's writes are done before
    // the flag goes back.
    std::atomic_signal_fence(std::memory_order_seq_cst);
    detail::tls_state.common_flags = prev_;
  }
  SignalHandlerScope(const SignalHandlerScope&) = delete;
  SignalHandlerScope& operator=(const SignalHandlerScope&) = delete;

 private:
  uint8_t prev_;
};

namespace detail {
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "fill_common builds the CommonHeader as one little-endian word");
inline void fill_common(void* rec, uint16_t id, const Reservation& r) {
  // CommonHeader {u16 type, u8 flags, u8 preempt_count, i32 pid} as one
  // 64-bit store: the thread's cached upper part (ThreadState: the tid
  // cached when the slot was claimed, the flags of a SignalHandlerScope),
  // one load, or'ed with the type, the nesting level and, for a write that
  // interrupted another of its thread, kFlagSignal.
  uint64_t cached;
  std::memcpy(&cached, &detail::tls_state, sizeof cached);
  const uint64_t level = r.level;
  const uint64_t word =
      cached | id | (static_cast<uint64_t>(level != 0) * (kFlagSignal << 16)) | (level << 24);
  std::memcpy(rec, &word, sizeof word);
}
// Bytes a string takes at record offset `off`, its NUL included, when
// `after` more string fields follow it. A __data_loc is offset:16 |
// length:16: at most 65534 characters, and, when strings follow, few enough
// that each of them still starts at an offset below 0x10000.
inline uint32_t str_len(std::string_view s, uint32_t off, uint32_t after) {
  size_t max = 65534;
  if (after != 0) {
    const size_t room = off + after <= 0xffff ? 0xffff - after - off : 0;
    if (room < max) max = room;
  }
  return static_cast<uint32_t>((s.size() > max ? max : s.size()) + 1);
}
// Dynamic bytes of one field placed at record offset `off`; `left` counts
// the string fields not placed yet (the same walk as put_field's).
template <class T, class P>
inline uint32_t dyn_size(uint32_t off, uint32_t* left, const P& v) {
  if constexpr (FieldTraits<T>::is_string) {
    return str_len(v, off, --*left);
  } else {
    (void)off, (void)left, (void)v;
    return 0;
  }
}

template <class T, class P>
inline void put_field(unsigned char* base, uint32_t off, const P& v, uint32_t* dyn,
                      uint32_t* left) {
  if constexpr (FieldTraits<T>::is_string) {
    const uint32_t n = str_len(v, *dyn, --*left);
    const uint32_t loc = (n << 16) | *dyn;
    std::memcpy(base + off, &loc, 4);
    std::memcpy(base + *dyn, v.data(), n - 1);
    base[*dyn + n - 1] = 0;
    *dyn += n;
  } else {
    (void)left;
    const typename FieldTraits<T>::storage s = v;
    std::memcpy(base + off, &s, sizeof s);
  }
}
}  // namespace detail

}  // namespace rbtrace

#define RBTRACE_DETAIL_FTYPE(f) BOOST_PP_TUPLE_ELEM(2, 0, f)
#define RBTRACE_DETAIL_FNAME(f) BOOST_PP_TUPLE_ELEM(2, 1, f)
#define RBTRACE_DETAIL_DECL(r, _, f) \
  typename ::rbtrace::FieldTraits<RBTRACE_DETAIL_FTYPE(f)>::storage RBTRACE_DETAIL_FNAME(f);
#define RBTRACE_DETAIL_PARAM(r, _, i, f)      \
  BOOST_PP_COMMA_IF(i)                         \
  typename ::rbtrace::FieldTraits<RBTRACE_DETAIL_FTYPE(f)>::param RBTRACE_DETAIL_FNAME(f)
#define RBTRACE_DETAIL_NSTR(r, _, f) \
  +(::rbtrace::FieldTraits<RBTRACE_DETAIL_FTYPE(f)>::is_string ? 1u : 0u)
#define RBTRACE_DETAIL_ARG(r, _, i, f) BOOST_PP_COMMA_IF(i) RBTRACE_DETAIL_FNAME(f)
#define RBTRACE_DETAIL_DYN(r, _, f)                                               \
  len_ += ::rbtrace::detail::dyn_size<RBTRACE_DETAIL_FTYPE(f)>(len_, &left_,     \
                                                               RBTRACE_DETAIL_FNAME(f));
#define RBTRACE_DETAIL_PUT(r, _, f)                                                     \
  ::rbtrace::detail::put_field<RBTRACE_DETAIL_FTYPE(f)>(                                \
      base_, static_cast<uint32_t>(offsetof(record, RBTRACE_DETAIL_FNAME(f))), \
      RBTRACE_DETAIL_FNAME(f), &dyn_, &left_);
#define RBTRACE_DETAIL_META(r, _, f)                                                    \
  {::rbtrace::FieldTraits<RBTRACE_DETAIL_FTYPE(f)>::c_name,                             \
   BOOST_PP_STRINGIZE(RBTRACE_DETAIL_FNAME(f)),                                         \
   static_cast<uint32_t>(offsetof(record, RBTRACE_DETAIL_FNAME(f))),                    \
   static_cast<uint32_t>(sizeof(record::RBTRACE_DETAIL_FNAME(f))),                      \
   ::rbtrace::FieldTraits<RBTRACE_DETAIL_FTYPE(f)>::is_signed,                          \
   ::rbtrace::FieldTraits<RBTRACE_DETAIL_FTYPE(f)>::is_string,                          \
   ::rbtrace::FieldTraits<RBTRACE_DETAIL_FTYPE(f)>::fmt},

#define RBTRACE_EVENT(SYS_, NAME_, FIELDS_)                                             \
  namespace rbtrace_events {                                                            \
  struct SYS_##_##NAME_ {                                                              \
    struct record {                                                                     \
      ::rbtrace::CommonHeader common;                                                   \
      BOOST_PP_SEQ_FOR_EACH(RBTRACE_DETAIL_DECL, _, FIELDS_)                             \
    };                                                                                  \
    static inline std::atomic<bool> enabled_{true};                                     \
    static inline ::rbtrace::EventType type_;                                           \
    static inline const uint16_t id_ = [] {                                             \
      type_.system = #SYS_;                                                           \
      type_.name = #NAME_;                                                               \
      type_.enabled = &enabled_;                                                        \
      type_.fixed_size = sizeof(record);                                                \
      type_.fields = {BOOST_PP_SEQ_FOR_EACH(RBTRACE_DETAIL_META, _, FIELDS_)};           \
      return ::rbtrace::register_event(&type_);                                         \
    }();                                                                                \
    static const ::rbtrace::EventType& type() { return type_; }                         \
    static uint16_t id() { return id_; }                                                \
    static void enable() { enabled_.store(true, std::memory_order_relaxed); }           \
    static void disable() { enabled_.store(false, std::memory_order_relaxed); }         \
    static bool enabled() { return enabled_.load(std::memory_order_relaxed); }          \
    /* 0, -ENOENT when disabled, or the reserve error. The disabled check is */      \
    /* inlined into the caller whatever the size of the write below. */                 \
    template <class Hooks = ::rbtrace::NoHooks>                                         \
    RBTRACE_ALWAYS_INLINE static int emit(                                              \
        ::rbtrace::RingBuffer& rb_, BOOST_PP_SEQ_FOR_EACH_I(RBTRACE_DETAIL_PARAM, _, FIELDS_)) { \
      /* relaxed: a flag, nothing is published through it */                          \
      if (__builtin_expect(!enabled_.load(std::memory_order_relaxed), 0)) return -ENOENT; \
      return write<Hooks>(rb_, BOOST_PP_SEQ_FOR_EACH_I(RBTRACE_DETAIL_ARG, _, FIELDS_)); \
    }                                                                                   \
    /* emit without the enabled check. */                                              \
    template <class Hooks = ::rbtrace::NoHooks>                                         \
    static int write(::rbtrace::RingBuffer& rb_,                                        \
                     BOOST_PP_SEQ_FOR_EACH_I(RBTRACE_DETAIL_PARAM, _, FIELDS_)) {        \
      uint32_t left_ = 0u BOOST_PP_SEQ_FOR_EACH(RBTRACE_DETAIL_NSTR, _, FIELDS_);       \
      uint32_t len_ = static_cast<uint32_t>(sizeof(record));                            \
      BOOST_PP_SEQ_FOR_EACH(RBTRACE_DETAIL_DYN, _, FIELDS_)                             \
      ::rbtrace::Reservation r_ = rb_.template reserve<Hooks>(len_);                    \
      if (!r_) return r_.err;                                                           \
      unsigned char* base_ = static_cast<unsigned char*>(r_.data);                      \
      uint32_t dyn_ = static_cast<uint32_t>(sizeof(record));                            \
      left_ = 0u BOOST_PP_SEQ_FOR_EACH(RBTRACE_DETAIL_NSTR, _, FIELDS_);                \
      ::rbtrace::detail::fill_common(base_, id_, r_);                                   \
      BOOST_PP_SEQ_FOR_EACH(RBTRACE_DETAIL_PUT, _, FIELDS_)                              \
      (void)dyn_, (void)left_;                                                          \
      rb_.template commit<Hooks>(r_);                                                   \
      return 0;                                                                         \
    }                                                                                   \
  };                                                                                    \
  }
