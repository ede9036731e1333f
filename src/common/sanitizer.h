/* Which sanitizers this translation unit is built with, and their fiber
 * interfaces. Internal. */
#ifndef WEFT_SANITIZER_H
#define WEFT_SANITIZER_H

#ifndef __has_feature
#define __has_feature(x) 0
#endif

#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
#define WEFT__ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#else
#define WEFT__ASAN 0
#endif

#if defined(__SANITIZE_THREAD__) || __has_feature(thread_sanitizer)
#define WEFT__TSAN 1
#include <sanitizer/tsan_interface.h>
#else
#define WEFT__TSAN 0
#endif

#if defined(WEFT_HAVE_VALGRIND) && WEFT_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#define WEFT__VALGRIND 1
#else
#define WEFT__VALGRIND 0
#endif

#endif
