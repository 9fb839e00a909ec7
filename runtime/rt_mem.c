/* rt_mem.c - instance memory: anonymous mappings, 2 MiB aligned, huge-page advised, prefaulted. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MADV_HUGEPAGE */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rt_internal.h"

/* A first touch of a 4 KiB page costs ~11 us on the machines Kiln is tuned
 * on; a kernel must never pay it mid-run, so every page is touched here. A
 * block of 2 MiB or more is aligned to 2 MiB so that transparent huge pages
 * can back all of it (one fault per 2 MiB instead of 512). */
#define MEM_PAGE 4096u
#define MEM_HUGE (2u * 1024u * 1024u)

/* The mapping's length for a request: whole pages, at least one (so that
 * 0 bytes still gives a unique, freeable pointer); 0 on overflow. */
static size_t mem_len(size_t bytes) {
  if (bytes > SIZE_MAX - MEM_HUGE - MEM_PAGE) return 0;
  size_t n = (bytes + MEM_PAGE - 1) / MEM_PAGE * MEM_PAGE;
  return n ? n : MEM_PAGE;
}

/* Maps len + MEM_HUGE bytes and unmaps the ends around a 2 MiB aligned block. */
static void *mem_map_aligned(size_t len) {
  size_t over = len + MEM_HUGE;
  unsigned char *raw = mmap(NULL, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  uintptr_t start = ((uintptr_t)raw + MEM_HUGE - 1) / MEM_HUGE * MEM_HUGE;
  unsigned char *p = (unsigned char *)start;
  size_t head = (size_t)(p - raw), tail = over - head - len;
  if (head) munmap(raw, head);
  if (tail) munmap(p + len, tail);
  return p;
}

/* -1 when the kernel says the memory is not there (rather than touching
 * pages until the OOM killer comes). */
static int mem_prefault(unsigned char *p, size_t len) {
#ifdef MADV_POPULATE_WRITE
  if (madvise(p, len, MADV_POPULATE_WRITE) == 0) return 0; /* Linux 5.14+: one call */
  if (errno == ENOMEM || errno == EFAULT) return -1;
#endif
  for (size_t i = 0; i < len; i += MEM_PAGE) ((volatile unsigned char *)p)[i] = 0;
  return 0;
}

void *kiln_mem_alloc(size_t bytes) {
  size_t len = mem_len(bytes);
  if (len == 0) return NULL;
  unsigned char *p;
  if (len >= MEM_HUGE) {
    p = mem_map_aligned(len);
  } else {
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) p = NULL;
  }
  if (!p) return NULL;
#ifdef MADV_HUGEPAGE
  if (len >= MEM_HUGE) madvise(p, len, MADV_HUGEPAGE); /* advice only: failure is harmless */
#endif
  /* Anonymous pages are zero, so touching keeps them zeroed. */
  if (mem_prefault(p, len) != 0) {
    munmap(p, len);
    return NULL;
  }
  return p;
}

void kiln_mem_free(void *p, size_t bytes) {
  if (p) munmap(p, mem_len(bytes));
}
