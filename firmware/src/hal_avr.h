/* ATmega328P HAL: timer-triggered continuous ADC sampling, interrupt UART with rings, millis, EEPROM. */
#ifndef CDS_HAL_AVR_H
#define CDS_HAL_AVR_H

#include <stdint.h>

#include "../lib/hal.h"
#include "../lib/metering/metering.h"

#define HAL_UART_RX_RING 64u /* powers of two */
#define HAL_UART_TX_RING 64u

/* Starts Timer0 (1 ms tick), Timer1 (ADC trigger at BOARD_CONV_RATE_HZ), the ADC, UART0 at 115200 and the
 * watchdog, then enables interrupts. Every conversion pair goes to metering_add_pair(m, ...). */
void hal_init(metering_t *m);
/* MCUSR at reset, captured before the watchdog was disabled. */
uint8_t hal_reset_cause(void);
uint32_t hal_millis(void);
/* Pair rate actually reached over the last full second (sample pairs per second). */
uint16_t hal_pair_rate(void);
/* hal_millis() at the moment the last measuring window closed. */
uint32_t hal_window_end_ms(void);
int16_t hal_uart_getc(void);                 /* -1 when empty */
void hal_uart_write(const uint8_t *data, uint8_t len);
void hal_watchdog_kick(void);
void hal_idle(void);                         /* sleep until the next interrupt */
/* Run fn with the ADC interrupt masked (short critical section for the metering hand-over). */
void hal_atomic_begin(void);
void hal_atomic_end(void);

#endif
