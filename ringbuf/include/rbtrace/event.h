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
//   - `emit(seq, value, who)`: the same into the process ring
//     (rbtrace/tracer.h), -ENODEV when there is none,
//   - `enable()` / `disable()`: a disabled event costs one load and a branch.
//
// Field types (anything else fails with a static_assert listing these):
//   - the fixed-width integer types, long long / unsigned long long (64-bit)
//     and bool;
//   - rbtrace::str (passed as std::string_view; longer than 65534 bytes is
//     cut, and a string followed by other dynamic fields is cut so that
//     their 16-bit __data_loc offsets still fit);
//   - float, double: "double ms", signed:1; trace-cmd shows the IEEE bits
//     in hex (0x3ff8000000000000 for 1.5), rbtrace report the number;
//   - an enum declared once with RBTRACE_ENUM (below), stored as its
//     underlying type, printed by name (__print_symbolic);
//   - std::array<I, N> of a fixed-width integer type: "u8 mac[6]"
//     (trace-cmd: __print_hex for 1-byte elements, __print_array else);
//   - rbtrace::bytes, a byte sequence passed as any contiguous range of
//     1-byte elements (bytes_view): "__data_loc u8[]", cut as strings are;
//   - any pointer T*: "unsigned long", printed 0x%lx (never dereferenced).
// A type with a comma needs no alias: ((std::array<uint8_t, 6>, mac)).
//
//   namespace net { enum class Proto : uint8_t { Tcp, Udp }; }
//   RBTRACE_ENUM(net::Proto, (Tcp)(Udp))
//   RBTRACE_EVENT(net, pkt, ((net::Proto, proto))((std::array<uint8_t, 6>, mac))
//                           ((rbtrace::bytes, head))((double, ms))((const void*, sock)))
//   rbtrace_events::net_pkt::emit(rb, net::Proto::Udp, mac, std::span(buf, 16), 0.25, s);
#pragma once

#include <boost/preprocessor/comma_if.hpp>
#include <boost/preprocessor/seq/for_each.hpp>
#include <boost/preprocessor/seq/for_each_i.hpp>
#include <boost/preprocessor/stringize.hpp>
#include <boost/preprocessor/arithmetic/dec.hpp>
#include <boost/preprocessor/tuple/elem.hpp>
#include <boost/preprocessor/tuple/enum.hpp>
#include <boost/preprocessor/tuple/pop_back.hpp>
#include <boost/preprocessor/tuple/size.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ranges>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "rbtrace/ring_buffer.h"
#include "rbtrace/tracer.h"

namespace rbtrace {

template <class T>
inline constexpr bool kAlwaysFalse = false;
template <size_t N>
inline constexpr bool kAlwaysFalseN = false;

struct str {};    // marker type for a __data_loc char[] field
struct bytes {};  // marker type for a __data_loc u8[] field (a byte sequence)

// A byte sequence passed to a `rbtrace::bytes` field: any contiguous range
// of 1-byte elements (std::span<const uint8_t>, std::string_view,
// std::vector<uint8_t>, std::array<std::byte, N>, ...) or (pointer, size).
struct bytes_view {
  const void* data = nullptr;
  size_t size = 0;
  constexpr bytes_view() = default;
  constexpr bytes_view(const void* p, size_t n) : data(p), size(n) {}
  template <class R>
    requires std::ranges::contiguous_range<const R&> &&
             (sizeof(std::ranges::range_value_t<const R&>) == 1) &&
             (!(std::is_array_v<std::remove_cvref_t<R>> &&
                std::is_same_v<std::remove_extent_t<std::remove_cvref_t<R>>, char>))
  constexpr bytes_view(const R& r)  // NOLINT: implicit by design
      : data(std::ranges::data(r)), size(std::ranges::size(r)) {}
  // A char array is refused: a string literal would bring its NUL along.
  template <size_t N>
  bytes_view(const char (&)[N]) {  // NOLINT: implicit, to be refused
    static_assert(kAlwaysFalseN<N>,
                  "rbtrace::bytes from a char array: pass std::string_view(\"...\") for the "
                  "characters without the NUL, or std::span(array) for all N bytes");
  }
};

// The field kinds of an EventField.
enum class FieldKind : uint8_t {
  kInt,      // fixed-width integer or bool
  kString,   // rbtrace::str: __data_loc char[]
  kFloat,    // float, double
  kEnum,     // an enum declared with RBTRACE_ENUM: its underlying integer
  kArray,    // std::array<integer, N>: "u8 name[N]"
  kBytes,    // rbtrace::bytes: __data_loc u8[]
  kPointer,  // any T*: unsigned long, printed 0x%lx
};

// An enum's names: specialised by RBTRACE_ENUM (below).
template <class E>
struct EnumTraits {
  static constexpr bool declared = false;
};
struct EnumValue {
  int64_t value;
  const char* name;
};


// The primary template: every supported type has a specialisation below.
template <class T>
struct FieldTraits {
  static_assert(kAlwaysFalse<T>,
                "RBTRACE_EVENT field type not supported. Supported: uint8_t..uint64_t, "
                "int8_t..int64_t, bool, float, double, rbtrace::str (a string), "
                "rbtrace::bytes (a byte sequence), std::array<I, N> of a fixed-width "
                "integer type I, any pointer T*, and an enum declared with "
                "RBTRACE_ENUM(Type, (A)(B)...) at global scope");
};
#define RBTRACE_FIELD_TRAITS(T, cname, pfmt)                      \
  template <>                                                     \
  struct FieldTraits<T> {                                         \
    using storage = T;                                            \
    using param = T;                                              \
    static constexpr const char* c_name = cname;                  \
    static constexpr const char* fmt = pfmt;                      \
    static constexpr bool is_signed = std::is_signed_v<T>;        \
    static constexpr bool is_string = false;                      \
    static constexpr bool is_dynamic = false;                     \
    static constexpr FieldKind kind = FieldKind::kInt;            \
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
// long long and unsigned long long where they are not int64_t/uint64_t
// (LP64 Linux: those are long): the same 64-bit fields.
template <class T>
  requires(std::is_same_v<T, long long> && !std::is_same_v<long long, int64_t>)
struct FieldTraits<T> : FieldTraits<int64_t> {
  using storage = long long;
  using param = long long;
};
template <class T>
  requires(std::is_same_v<T, unsigned long long> && !std::is_same_v<unsigned long long, uint64_t>)
struct FieldTraits<T> : FieldTraits<uint64_t> {
  using storage = unsigned long long;
  using param = unsigned long long;
};
template <>
struct FieldTraits<str> {
  using storage = uint32_t;
  using param = std::string_view;
  static constexpr const char* c_name = "__data_loc char[]";
  static constexpr const char* fmt = "%s";
  static constexpr bool is_signed = false;
  static constexpr bool is_string = true;
  static constexpr bool is_dynamic = true;
  static constexpr FieldKind kind = FieldKind::kString;
};
template <>
struct FieldTraits<bytes> {
  using storage = uint32_t;
  using param = bytes_view;
  static constexpr const char* c_name = "__data_loc u8[]";
  static constexpr const char* fmt = "%s";
  static constexpr bool is_signed = false;
  static constexpr bool is_string = false;
  static constexpr bool is_dynamic = true;
  static constexpr FieldKind kind = FieldKind::kBytes;
};
// float and double: "float x" / "double x", signed:1, the IEEE bits little
// endian. trace-cmd cannot print a float: the print fmt shows the bits in
// hex (%#llx: 0x3ff8000000000000 for 1.5); rbtrace's reader knows the type
// and prints the number (1.5).
template <>
struct FieldTraits<float> {
  using storage = float;
  using param = float;
  static constexpr const char* c_name = "float";
  static constexpr const char* fmt = "%#x";
  static constexpr bool is_signed = true;
  static constexpr bool is_string = false;
  static constexpr bool is_dynamic = false;
  static constexpr FieldKind kind = FieldKind::kFloat;
};
template <>
struct FieldTraits<double> {
  using storage = double;
  using param = double;
  static constexpr const char* c_name = "double";
  static constexpr const char* fmt = "%#llx";
  static constexpr bool is_signed = true;
  static constexpr bool is_string = false;
  static constexpr bool is_dynamic = false;
  static constexpr FieldKind kind = FieldKind::kFloat;
};
// Any pointer: its address as an unsigned long (the pointee is not read).
// Not a char pointer: a C string is an rbtrace::str field (passing a
// const char* to an rbtrace::str field records the string).
template <class T>
  requires(!std::is_same_v<std::remove_cv_t<T>, char>)
struct FieldTraits<T*> {
  using storage = uint64_t;
  using param = T*;
  static constexpr const char* c_name = "unsigned long";
  static constexpr const char* fmt = "0x%lx";
  static constexpr bool is_signed = false;
  static constexpr bool is_string = false;
  static constexpr bool is_dynamic = false;
  static constexpr FieldKind kind = FieldKind::kPointer;
};
// std::array<I, N> of a fixed-width integer type (not bool, not char):
// the kernel's "u8 name[N]"; printed by trace-cmd with __print_hex (u8,
// s8) or __print_array (wider elements).
template <class I, size_t N>
  requires(std::is_integral_v<I> && !std::is_same_v<I, bool> && !std::is_same_v<I, char> &&
           N > 0)
struct FieldTraits<std::array<I, N>> {
  using storage = std::array<I, N>;
  using param = const std::array<I, N>&;
  static constexpr const char* c_name = FieldTraits<I>::c_name;
  static constexpr const char* fmt = "%s";
  static constexpr bool is_signed = std::is_signed_v<I>;
  static constexpr bool is_string = false;
  static constexpr bool is_dynamic = false;
  static constexpr FieldKind kind = FieldKind::kArray;
};
// An enum declared with RBTRACE_ENUM: stored as its underlying type,
// printed by name (__print_symbolic).
template <class E>
  requires(std::is_enum_v<E> && EnumTraits<E>::declared)
struct FieldTraits<E> {
  using storage = std::underlying_type_t<E>;
  using param = E;
  static constexpr const char* c_name = FieldTraits<storage>::c_name;
  static constexpr const char* fmt = "%s";
  static constexpr bool is_signed = std::is_signed_v<storage>;
  static constexpr bool is_string = false;
  static constexpr bool is_dynamic = false;
  static constexpr FieldKind kind = FieldKind::kEnum;
};

// The enum's names of a field type (null when it is not an enum).
template <class T>
constexpr const EnumValue* enum_values() {
  if constexpr (std::is_enum_v<T>) return EnumTraits<T>::values;
  else return nullptr;
}
template <class T>
constexpr uint32_t enum_count() {
  if constexpr (std::is_enum_v<T>) return sizeof(EnumTraits<T>::values) / sizeof(EnumValue);
  else return 0;
}
// Elements of an array field (0 when it is not one) and their size.
template <class T>
struct ArrayInfo {
  static constexpr uint32_t n = 0, elem_size = 0;
};
template <class I, size_t N>
struct ArrayInfo<std::array<I, N>> {
  static constexpr uint32_t n = static_cast<uint32_t>(N), elem_size = sizeof(I);
};

struct EventField {
  const char* c_type;
  const char* name;
  uint32_t offset;
  uint32_t size;
  bool is_signed;
  bool is_string;
  const char* fmt;
  FieldKind kind;
  uint32_t array_len;        // kArray: elements (the "[N]" of the declaration)
  uint32_t elem_size;        // kArray: bytes per element
  const EnumValue* symbols;  // kEnum: the names
  uint32_t nsymbols;
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
// All registered types, in id order (the pointers stay valid). Types are
// only added (ids stay): an event type whose RBTRACE_EVENT is in a library
// loaded later (dlopen) or in an object whose initializers run after a
// consumer started joins the list then.
std::vector<const EventType*> registered_events();
// How many there are: one relaxed load (a consumer looks every pass).
uint32_t registered_event_count();
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
// byte of the thread's state; no system call, no allocation. A handler that
// leaves by siglongjmp skips the destructor: the thread's later events
// would stay flagged (restore with a scope of its own, or do not jump out
// of a scope).
class SignalHandlerScope {
 public:
  [[nodiscard]] SignalHandlerScope() noexcept : prev_(detail::tls_state.common_flags) {
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
// Zeroes the bytes between a record's length and its rounding to 4 (the
// ring keeps events 4-byte aligned; those bytes are the event's).
RBTRACE_ALWAYS_INLINE void zero_tail(unsigned char* base, uint32_t len) {
  if (len & 3u) std::memset(base + len, 0, 4 - (len & 3u));
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
// Bytes a byte sequence takes at record offset `off` when `after` more
// dynamic fields follow it (str_len's rule, without the NUL).
inline uint32_t bytes_len(size_t size, uint32_t off, uint32_t after) {
  size_t max = 65535;
  if (after != 0) {
    const size_t room = off + after <= 0xffff ? 0xffff - after - off : 0;
    if (room < max) max = room;
  }
  return static_cast<uint32_t>(size > max ? max : size);
}
// Dynamic bytes of one field placed at record offset `off`; `left` counts
// the dynamic fields not placed yet (the same walk as put_field's).
template <class T, class P>
inline uint32_t dyn_size(uint32_t off, uint32_t* left, const P& v) {
  if constexpr (FieldTraits<T>::is_string) {
    return str_len(v, off, --*left);
  } else if constexpr (FieldTraits<T>::kind == FieldKind::kBytes) {
    return bytes_len(v.size, off, --*left);
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
  } else if constexpr (FieldTraits<T>::kind == FieldKind::kBytes) {
    const uint32_t n = bytes_len(v.size, *dyn, --*left);
    const uint32_t loc = (n << 16) | *dyn;
    std::memcpy(base + off, &loc, 4);
    if (n != 0) std::memcpy(base + *dyn, v.data, n);
    *dyn += n;
  } else if constexpr (FieldTraits<T>::kind == FieldKind::kPointer) {
    (void)left;
    const uint64_t s = reinterpret_cast<uintptr_t>(v);
    std::memcpy(base + off, &s, sizeof s);
  } else if constexpr (FieldTraits<T>::kind == FieldKind::kEnum) {
    (void)left;
    const typename FieldTraits<T>::storage s = static_cast<typename FieldTraits<T>::storage>(v);
    std::memcpy(base + off, &s, sizeof s);
  } else if constexpr (FieldTraits<T>::kind == FieldKind::kArray) {
    (void)left;
    std::memcpy(base + off, v.data(), sizeof v);  // straight from the caller's array
  } else {
    (void)left;
    const typename FieldTraits<T>::storage s = v;
    std::memcpy(base + off, &s, sizeof s);
  }
}
}  // namespace detail

}  // namespace rbtrace

// A field is (TYPE, NAME); TYPE may hold commas (std::array<uint8_t, 6>):
// the name is the tuple's last element, the type all the others.
#define RBTRACE_DETAIL_FTYPE(f) BOOST_PP_TUPLE_ENUM(BOOST_PP_TUPLE_POP_BACK(f))
#define RBTRACE_DETAIL_FNAME(f) BOOST_PP_TUPLE_ELEM(BOOST_PP_DEC(BOOST_PP_TUPLE_SIZE(f)), f)
#define RBTRACE_DETAIL_DECL(r, _, f) \
  typename ::rbtrace::FieldTraits<RBTRACE_DETAIL_FTYPE(f)>::storage RBTRACE_DETAIL_FNAME(f);
#define RBTRACE_DETAIL_PARAM(r, _, i, f)      \
  BOOST_PP_COMMA_IF(i)                         \
  typename ::rbtrace::FieldTraits<RBTRACE_DETAIL_FTYPE(f)>::param RBTRACE_DETAIL_FNAME(f)
#define RBTRACE_DETAIL_NSTR(r, _, f) \
  +(::rbtrace::FieldTraits<RBTRACE_DETAIL_FTYPE(f)>::is_dynamic ? 1u : 0u)
#define RBTRACE_DETAIL_ARG(r, _, i, f) BOOST_PP_COMMA_IF(i) RBTRACE_DETAIL_FNAME(f)
#define RBTRACE_DETAIL_FSIZE(r, _, f) \
  +sizeof(typename ::rbtrace::FieldTraits<RBTRACE_DETAIL_FTYPE(f)>::storage)
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
   ::rbtrace::FieldTraits<RBTRACE_DETAIL_FTYPE(f)>::fmt,                                \
   ::rbtrace::FieldTraits<RBTRACE_DETAIL_FTYPE(f)>::kind,                               \
   ::rbtrace::ArrayInfo<RBTRACE_DETAIL_FTYPE(f)>::n,                                    \
   ::rbtrace::ArrayInfo<RBTRACE_DETAIL_FTYPE(f)>::elem_size,                            \
   ::rbtrace::enum_values<RBTRACE_DETAIL_FTYPE(f)>(),                                   \
   ::rbtrace::enum_count<RBTRACE_DETAIL_FTYPE(f)>()},

// RBTRACE_ENUM(ns::Color, (Red)(Green)(Blue)): makes the enum (scoped or
// not) a field type, printed by name. At global scope, the type fully
// qualified, every enumerator that may be traced listed (another value
// prints as its number in rbtrace report, as trace-cmd prints it).
#define RBTRACE_DETAIL_ENUM_VALUE(r, E_, e) \
  {static_cast<int64_t>(E_::e), BOOST_PP_STRINGIZE(e)},
#define RBTRACE_ENUM(E_, NAMES_)                                              \
  template <>                                                                 \
  struct rbtrace::EnumTraits<E_> {                                            \
    static constexpr bool declared = true;                                    \
    static constexpr ::rbtrace::EnumValue values[] = {                        \
        BOOST_PP_SEQ_FOR_EACH(RBTRACE_DETAIL_ENUM_VALUE, E_, NAMES_)};        \
  };

#define RBTRACE_EVENT(SYS_, NAME_, FIELDS_)                                             \
  namespace rbtrace_events {                                                            \
  struct SYS_##_##NAME_ {                                                              \
    struct record {                                                                     \
      ::rbtrace::CommonHeader common;                                                   \
      BOOST_PP_SEQ_FOR_EACH(RBTRACE_DETAIL_DECL, _, FIELDS_)                             \
    };                                                                                  \
    static inline std::atomic<bool> enabled_{true};                                     \
    /* Never destroyed (allocated once): the registry and a consumer still */         \
    /* draining at exit (rbtrace::autostart's stop runs after static */                 \
    /* destructors registered later) read it. */                                       \
    static inline ::rbtrace::EventType& type_ = *new ::rbtrace::EventType;              \
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
    /* The process ring's emit (rbtrace/tracer.h): -ENODEV, after one load */        \
    /* and one branch, when there is none; -ENOENT when disabled; else a */             \
    /* call to the write, kept out of line: inlined, its register saves */              \
    /* would be paid by the caller on every call, taken or not (a library */            \
    /* function with a tracepoint would cost 19 instructions more with no */            \
    /* tracer; callgrind --mode lib-no-tracer). */                                       \
    template <class Hooks = ::rbtrace::NoHooks>                                         \
    RBTRACE_ALWAYS_INLINE static int emit(                                              \
        BOOST_PP_SEQ_FOR_EACH_I(RBTRACE_DETAIL_PARAM, _, FIELDS_)) {                    \
      ::rbtrace::RingBuffer* const prb_ = ::rbtrace::process_ring();                     \
      if (__builtin_expect(prb_ == nullptr, 0)) return -ENODEV;                         \
      /* relaxed: a flag, nothing is published through it */                          \
      if (__builtin_expect(!enabled_.load(std::memory_order_relaxed), 0)) return -ENOENT; \
      return write_out_of_line<Hooks>(*prb_,                                            \
                                      BOOST_PP_SEQ_FOR_EACH_I(RBTRACE_DETAIL_ARG, _, FIELDS_)); \
    }                                                                                   \
    /* A RingBuffer* where a ring reference or nothing belongs: refused, */            \
    /* rather than recorded as a pointer or bool field of the process ring. */          \
    template <class... A_>                                                              \
    static int emit(::rbtrace::RingBuffer*, A_&&...) = delete;                          \
    template <class Hooks = ::rbtrace::NoHooks>                                         \
    __attribute__((noinline)) static int write_out_of_line(                            \
        ::rbtrace::RingBuffer& rb_, BOOST_PP_SEQ_FOR_EACH_I(RBTRACE_DETAIL_PARAM, _, FIELDS_)) { \
      return write<Hooks>(rb_, BOOST_PP_SEQ_FOR_EACH_I(RBTRACE_DETAIL_ARG, _, FIELDS_)); \
    }                                                                                   \
    /* emit without the enabled check. */                                              \
    template <class Hooks = ::rbtrace::NoHooks>                                         \
    static int write(::rbtrace::RingBuffer& rb_,                                        \
                     BOOST_PP_SEQ_FOR_EACH_I(RBTRACE_DETAIL_PARAM, _, FIELDS_)) {        \
      uint32_t left_ = 0u BOOST_PP_SEQ_FOR_EACH(RBTRACE_DETAIL_NSTR, _, FIELDS_);       \
      /* A __data_loc offset has 16 bits: the fixed part must leave room. */            \
      static_assert((0u BOOST_PP_SEQ_FOR_EACH(RBTRACE_DETAIL_NSTR, _, FIELDS_)) == 0 ||  \
                        sizeof(record) < 0xffff,                                        \
                    "an event with string or bytes fields needs its fixed fields "     \
                    "to take less than 64 KiB (__data_loc offsets are 16 bits)");      \
      uint32_t len_ = static_cast<uint32_t>(sizeof(record));                            \
      BOOST_PP_SEQ_FOR_EACH(RBTRACE_DETAIL_DYN, _, FIELDS_)                             \
      ::rbtrace::Reservation r_ = rb_.template reserve<Hooks>(len_);                    \
      if (!r_) return r_.err;                                                           \
      unsigned char* base_ = static_cast<unsigned char*>(r_.data);                      \
      uint32_t dyn_ = static_cast<uint32_t>(sizeof(record));                            \
      left_ = 0u BOOST_PP_SEQ_FOR_EACH(RBTRACE_DETAIL_NSTR, _, FIELDS_);                \
      /* Bytes no field covers (alignment padding inside the record, the */           \
      /* rounding of the length to 4) would carry older ring bytes into */              \
      /* the file: zeroed. Both folded away at compile time for records */             \
      /* without padding and of a fixed length that is a multiple of 4. */             \
      if constexpr (sizeof(record) != sizeof(::rbtrace::CommonHeader)                  \
                                          BOOST_PP_SEQ_FOR_EACH(RBTRACE_DETAIL_FSIZE, _, FIELDS_)) \
        std::memset(base_, 0, sizeof(record));                                          \
      ::rbtrace::detail::zero_tail(base_, len_);                                        \
      ::rbtrace::detail::fill_common(base_, id_, r_);                                   \
      BOOST_PP_SEQ_FOR_EACH(RBTRACE_DETAIL_PUT, _, FIELDS_)                              \
      (void)dyn_, (void)left_;                                                          \
      rb_.template commit<Hooks>(r_);                                                   \
      return 0;                                                                         \
    }                                                                                   \
  };                                                                                    \
  }
