/* pyconfig.h for building spprof's `_spprof` extension with mingw-w64 (x86-64) against the official Windows
   CPython (python.org / embeddable builds, made with MSVC). Written for spprof from the facts the public
   headers need; CPython's own Windows configuration lives in its PC/ directory.

   Only what Include/ reads matters here: the type sizes of the LLP64 ABI (long is 32-bit), that the core is
   a DLL whose symbols are imported with __declspec(dllimport), and the names of the platform. Everything
   else (HAVE_* for functions of the C library) concerns building CPython itself, not an extension. */
#ifndef Py_CONFIG_H
#define Py_CONFIG_H

#if !defined(_WIN64) || !defined(__MINGW32__)
#  error "tools/windows/pyconfig.h is for mingw-w64 targeting 64-bit Windows"
#endif

#include <io.h>
#include <stdio.h>
#include <limits.h>

#define MS_WIN32          /* Win32 API (also on 64-bit Windows) */
#define MS_WIN64
#define MS_WINDOWS
#define NT_THREADS
#define WITH_THREAD
#define PLATFORM "win32"
#define COMPILER "[gcc]"  /* mingw-w64 */
#define PYD_PLATFORM_TAG "win_amd64"

/* The interpreter is python3X.dll: data and functions are imported from it. */
#define Py_ENABLE_SHARED 1
#define MS_COREDLL
#define HAVE_DECLSPEC_DLL

/* LLP64 sizes */
#define SIZEOF_SHORT 2
#define SIZEOF_INT 4
#define SIZEOF_LONG 4
#define ALIGNOF_LONG 4
#define SIZEOF_LONG_LONG 8
#define SIZEOF_VOID_P 8
#define SIZEOF_SIZE_T 8
#define ALIGNOF_SIZE_T 8
#define ALIGNOF_MAX_ALIGN_T 8
#define SIZEOF_TIME_T 8
#define SIZEOF_OFF_T 4
#define SIZEOF_FPOS_T 8
#define SIZEOF_HKEY 8
#define SIZEOF_WCHAR_T 2
#define SIZEOF_DOUBLE 8
#define SIZEOF_FLOAT 4
#define SIZEOF__BOOL 1
#define LONG_BIT 32
#define WORD_BIT 32
#define HAVE_LARGEFILE_SUPPORT

/* Py_ssize_t is a 64-bit signed integer (not long: that is 32-bit here) */
typedef long long Py_ssize_t;
#define PY_SSIZE_T_MAX LLONG_MAX
#define HAVE_PY_SSIZE_T 1

#define PY_LONG_LONG long long
#define PY_LLONG_MIN LLONG_MIN
#define PY_LLONG_MAX LLONG_MAX
#define PY_ULLONG_MAX ULLONG_MAX
#define PY_UINT32_T uint32_t
#define PY_UINT64_T uint64_t
#define PY_INT32_T int32_t
#define PY_INT64_T int64_t

#define HAVE_WCHAR_H 1
#define HAVE_STDDEF_H 1
#define HAVE_IO_H 1
#define STDC_HEADERS 1
#define DONT_HAVE_SIG_ALARM
#define DONT_HAVE_SIG_PAUSE

#endif /* Py_CONFIG_H */
