/* llvm_info.h - what LLVM the backend was built with and what host it targets. */
#ifndef KILN_LLVM_INFO_H
#define KILN_LLVM_INFO_H

#include <stddef.h>

/* "LLVM 19.1.7, host znver4 (+avx512f,...)" into buf; returns buf. */
char *llvm_describe_host(char *buf, size_t len);

#endif
