// rbtrace/rbtrace.h - umbrella header of the ring buffer (rbtrace::ringbuf).
#pragma once

#include "rbtrace/clock.h"
#include "rbtrace/event.h"
#include "rbtrace/format.h"
#include "rbtrace/library_thread.h"
#include "rbtrace/ring_buffer.h"
#include "rbtrace/tracer.h"
#include "rbtrace/track.h"
