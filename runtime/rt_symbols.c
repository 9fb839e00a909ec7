/* rt_symbols.c - libkilnrt's entry points by name, for a JIT that binds generated code's calls. */
#include <stddef.h>

#include "kiln_rt.h"

#define RT_SYM(f)                                                                                  \
  { #f, (void (*)(void))f }

const kiln_rt_symbol kiln_rt_symbols[] = {
    RT_SYM(kiln_rt_create),    RT_SYM(kiln_rt_destroy),     RT_SYM(kiln_rt_set_threads),
    RT_SYM(kiln_rt_load),      RT_SYM(kiln_rt_load_buffer), RT_SYM(kiln_rt_save),
    RT_SYM(kiln_rt_param),     RT_SYM(kiln_rt_param_grad),  RT_SYM(kiln_rt_strerror),
    RT_SYM(kiln_rt_message),   RT_SYM(kiln_pool_new),       RT_SYM(kiln_pool_free),
    RT_SYM(kiln_parallel_for), RT_SYM(kiln_job_shape),      RT_SYM(kiln_job_barrier),
    RT_SYM(kiln_mem_alloc),    RT_SYM(kiln_mem_free),       {NULL, NULL},
};
