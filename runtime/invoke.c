/* invoke.c - kiln_invoke: an int (*)(void *, void *...) entry point called through libffi. */
#include <stdlib.h>

#include <ffi.h>

#include "invoke.h"

int kiln_invoke(void (*fn)(void), void *self, void *const *args, int nargs) {
  if (!fn || nargs < 0 || nargs > KILN_INVOKE_MAX_ARGS || (nargs > 0 && !args)) return -1;
  int total = nargs + 1;
  ffi_type **types = malloc(sizeof *types * (size_t)total);
  void **values = malloc(sizeof *values * (size_t)total);
  void **slots = malloc(sizeof *slots * (size_t)total); /* the pointer arguments themselves */
  int rc = -1;
  ffi_cif cif;
  if (types && values && slots) {
    slots[0] = self;
    for (int i = 0; i < nargs; i++) slots[i + 1] = args[i];
    for (int i = 0; i < total; i++) types[i] = &ffi_type_pointer, values[i] = &slots[i];
    if (ffi_prep_cif(&cif, FFI_DEFAULT_ABI, (unsigned)total, &ffi_type_sint, types) == FFI_OK) {
      ffi_sarg ret = 0; /* ffi widens int returns to a full register */
      ffi_call(&cif, fn, &ret, values);
      rc = (int)ret;
    }
  }
  free(slots);
  free(values);
  free(types);
  return rc;
}
