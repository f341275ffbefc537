/*
 * The few services the portable core needs from a target. Implemented by firmware/src/hal_avr.c on the
 * ATmega328P and by firmware/host/hal_host.c on the host (EEPROM emulated in RAM, optionally backed by a file).
 */
#ifndef CDS_HAL_H
#define CDS_HAL_H

#include <stdint.h>

#define HAL_EEPROM_SIZE 1024u

void hal_eeprom_read(uint16_t addr, void *buf, uint8_t len);
/* Writes only the bytes that differ (saves wear) and reads them back; returns 1 if the bytes verified. */
uint8_t hal_eeprom_write(uint16_t addr, const void *buf, uint8_t len);

#endif
