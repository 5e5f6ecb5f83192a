/* What both harnesses (harness.c, infer_harness.c) need: text output (stdout on the host build with
 * -DTW_HOST, semihosting on the emulated core), the tw_mark_begin()/tw_mark_end() markers that bracket
 * each measured call for instruction counting, and a printf-free tw_itoa. Include it from exactly one
 * translation unit of a program (the harness). */
#ifndef TW_HARNESS_IO_H
#define TW_HARNESS_IO_H

#include <stdint.h>

#ifdef TW_HOST
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static void tw_out(const char *s) { fputs(s, stdout); }
#else
#include "semihost.h"
static void tw_out(const char *s) { tw_sh_write0(s); }
#endif

__attribute__((noinline)) void tw_mark_begin(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void tw_mark_end(void) { __asm__ volatile("" ::: "memory"); }

/* Decimal text of v into buf (at least 12 bytes); returns buf. Avoids printf, which would pull
 * several kilobytes of newlib into the image and needs more semihosting calls. */
static char *tw_itoa(int32_t v, char *buf)
{
    char tmp[12];
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    int n = 0;
    do {
        tmp[n++] = (char)('0' + (u % 10u));
        u /= 10u;
    } while (u != 0u);
    char *p = buf;
    if (v < 0) {
        *p++ = '-';
    }
    while (n > 0) {
        *p++ = tmp[--n];
    }
    *p = '\0';
    return buf;
}

#endif
