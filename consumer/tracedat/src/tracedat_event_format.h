// tracedat_event_format.h - the texts of a trace.dat header: the event
// formats (events/<system>/<name>/format: name, ID, fields, print fmt) and
// the header_page description; and the printf conversions of a print fmt,
// read the same way when the format is checked and when a record is
// printed (internal to rbtrace::tracedat).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "rbtrace/tracedat_reader.h"

namespace rbtrace::tracedat {

// Parses one event format text of `system` into *ev, fields checked (names,
// offsets, sizes, kinds, no field twice), the print fmt understood when it
// can be (ev->print_ok). False with a sentence in *err (naming the line).
bool parse_format(std::string_view text, const std::string& system, TraceEventFormat* ev,
                  std::string* err);

// The header_page text describes the kernel's page: timestamp at 0 (8
// bytes), commit at 8 (8 bytes, the long size), data at 16. False with a
// sentence in *err otherwise.
bool check_header_page(std::string_view text, uint32_t page_size, std::string* err);

// Field `f` of a record of `size` bytes at `rec` can be read: it lies in the
// record and, for a __data_loc string, so does the string (*dyn_off and
// *dyn_len, when not null, get its offset and length). False with a
// sentence in *err. The one bounds check of a field: field_value() decodes
// through it and check_trace_page() checks every dynamic string with it.
bool field_in_record(const unsigned char* rec, uint32_t size, const TraceField& f,
                     uint32_t* dyn_off, uint32_t* dyn_len, std::string* err);

// One conversion of a print fmt: %[flags][width][.precision][length]conv.
struct Conversion {
  std::string_view flags;  // of "-+ #0"
  int width = -1;          // -1: none
  int prec = -1;           // -1: none ("%.d": 0)
  std::string_view len;    // of "hlzjt": hh h l ll z j t
  char conv = 0;           // one of diouxXcsp, or '%' for "%%"
};

// Reads the conversion whose '%' is at fmt[*k - 1] into *c and leaves *k on
// its last character. Width and precision have at most 3 digits. False
// when it is not one of the conversions above ("%%" is one: conv '%').
bool parse_conversion(std::string_view fmt, size_t* k, Conversion* c);

}  // namespace rbtrace::tracedat
