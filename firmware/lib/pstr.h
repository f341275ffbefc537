/*
 * Constant strings in flash on the AVR (Harvard architecture: a plain string literal would be copied into the
 * 2 KB of RAM at start-up), ordinary strings on the host.
 */
#ifndef CDS_PSTR_H
#define CDS_PSTR_H

#ifdef __AVR__
#include <avr/pgmspace.h>
#define CDS_STR(s) PSTR(s)
#define CDS_FLASH PROGMEM
#define cds_str_byte(p) ((char)pgm_read_byte(p))
#define cds_flash_copy(dst, src, n) memcpy_P((dst), (src), (n))
#else
#define CDS_STR(s) (s)
#define CDS_FLASH
#define cds_str_byte(p) (*(const char *)(p))
#define cds_flash_copy(dst, src, n) memcpy((dst), (src), (n))
#endif

#endif
