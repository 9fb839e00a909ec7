/* llvm_info.c - the LLVM version and host CPU, for `kiln --version`. */
#include "llvm_info.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

/* Counts the enabled features (those starting with '+') of LLVM's host
 * feature string, so the version line stays short. */
static int llvm_count_features(const char *features) {
  int n = 0;
  for (const char *p = features; *p; p++)
    if (*p == '+' && (p == features || p[-1] == ',')) n++;
  return n;
}

char *llvm_describe_host(char *buf, size_t len) {
  unsigned major, minor, patch;
  LLVMGetVersion(&major, &minor, &patch);
  char *cpu = LLVMGetHostCPUName();
  char *features = LLVMGetHostCPUFeatures();
  bool avx512 = strstr(features, "+avx512f") != NULL;
  bool avx2 = strstr(features, "+avx2") != NULL;
  snprintf(buf, len, "LLVM %u.%u.%u, host %s, %d features (%s)", major, minor, patch, cpu,
           llvm_count_features(features),
           avx512 ? "AVX-512"
           : avx2 ? "AVX2"
                  : "no AVX2");
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(features);
  return buf;
}
