/*
 * ATmega328P at 16 MHz. Register-level code lives only here.
 *
 * Sampling: Timer1 in CTC mode interrupts at 6400 Hz (16 MHz / 2500). Its interrupt sets the multiplexer,
 * starts one ADC conversion as its first action, then collects the previous conversion (prescaler 128 -> 125 kHz
 * ADC clock, 13 ADC clocks = 104 us, so it finished inside the 156 us slot) and hands each (V, I) pair to the
 * metering core. Conversions alternate ADC0 (voltage) and ADC1 (current). The timer, not the code path, sets the
 * sampling instants, so they are evenly spaced and the V/I skew is exactly half a pair. (The ADC's hardware
 * auto-trigger from Timer1 compare B would remove the few cycles of ISR entry jitter as well, but simavr 1.6 does
 * not implement auto-trigger, and the simulated MCU must run this exact binary.)
 */
#include "hal_avr.h"

#include <avr/eeprom.h>
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>
#include <avr/wdt.h>
#include <util/atomic.h>
#include <string.h>

#include "../lib/board.h"

#define UART_BAUD 115200UL

static metering_t *s_metering;
static volatile uint32_t s_ms;
static volatile uint32_t s_window_end_ms;
static volatile uint16_t s_pairs_this_second;
static volatile uint16_t s_pair_rate;
static volatile uint16_t s_sec_ms;
static uint16_t s_v_raw;
static uint8_t s_channel; /* channel of the conversion in progress */
static uint8_t s_started;

static volatile uint8_t s_rx[HAL_UART_RX_RING];
static volatile uint8_t s_rx_head, s_rx_tail;
static volatile uint8_t s_tx[HAL_UART_TX_RING];
static volatile uint8_t s_tx_head, s_tx_tail;

/* Capture and clear the reset cause, and stop a watchdog left running by a watchdog reset (it stays enabled
 * with the shortest timeout across the reset and would otherwise reset the MCU again during start-up). */
static uint8_t s_mcusr __attribute__((section(".noinit")));
void hal_early_init(void) __attribute__((naked, used, section(".init3")));
void hal_early_init(void)
{
    s_mcusr = MCUSR;
    MCUSR = 0;
    wdt_disable();
}

uint8_t hal_reset_cause(void) { return s_mcusr; }

void hal_init(metering_t *m)
{
    s_metering = m;

    /* Timer0: CTC, /64, OCR0A = 249 -> 1 kHz tick */
    TCCR0A = _BV(WGM01);
    TCCR0B = _BV(CS01) | _BV(CS00);
    OCR0A = 249;
    TIMSK0 = _BV(OCIE0A);

    /* ADC: AVcc reference, prescaler 128 (125 kHz); digital input buffers off on ADC0/1. s_channel = 1 makes
     * the first tick start a voltage conversion. */
    ADMUX = _BV(REFS0);
    ADCSRA = _BV(ADEN) | _BV(ADPS2) | _BV(ADPS1) | _BV(ADPS0);
    DIDR0 = _BV(ADC0D) | _BV(ADC1D);
    /* The first conversion after enabling takes 25 ADC clocks (200 us), longer than a sampling slot: do it
     * now, so every timed conversion is a regular 13-clock one. */
    ADCSRA |= _BV(ADSC);
    while (ADCSRA & _BV(ADSC)) {
    }
    s_channel = 1;

    /* Timer1: CTC on OCR1A, no prescaler, 16 MHz / 2500 = 6400 Hz conversion trigger */
    TCCR1A = 0;
    TCCR1B = _BV(WGM12) | _BV(CS10);
    OCR1A = (uint16_t)(F_CPU / BOARD_CONV_RATE_HZ - 1u);
    TIMSK1 = _BV(OCIE1A);

    /* UART0: U2X before UBRR (simavr computes its timing on the UBRR write), 8N1, RX and UDRE interrupts */
    UCSR0A = _BV(U2X0);
    UBRR0 = (uint16_t)((F_CPU + 4UL * UART_BAUD) / (8UL * UART_BAUD) - 1UL);
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);

    wdt_enable(WDTO_2S);
    set_sleep_mode(SLEEP_MODE_IDLE);
    sei();
}

ISR(TIMER0_COMPA_vect)
{
    s_ms++;
    if (++s_sec_ms >= 1000u) {
        s_sec_ms = 0;
        s_pair_rate = s_pairs_this_second;
        s_pairs_this_second = 0;
    }
}

ISR(TIMER1_COMPA_vect)
{
    /* Collect the previous conversion (finished 52 us ago) and start the next one straight away, so the
     * sampling instant is set by the timer plus a fixed ISR entry latency. The result is read before ADMUX
     * changes: simavr resolves the result register against the multiplexer when it is read. */
    uint16_t raw = ADC;
    uint8_t ch = s_channel;
    ADMUX = ch ? (uint8_t)_BV(REFS0) : (uint8_t)(_BV(REFS0) | 1);
    ADCSRA |= _BV(ADSC);
    s_channel = (uint8_t)!ch;
    if (!s_started) { /* the very first tick has no previous conversion */
        s_started = 1;
        return;
    }
    if (ch == 0) { /* the conversion now started is I; the one collected was V */
        s_v_raw = raw;
        return;
    }
    metering_add_pair(s_metering, s_v_raw, raw);
    s_pairs_this_second++;
    if (s_metering->acc.n == 0)
        s_window_end_ms = s_ms;
}

uint32_t hal_millis(void)
{
    uint32_t v;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { v = s_ms; }  /* multi-byte, written by the ISR */
    return v;
}

uint32_t hal_window_end_ms(void)
{
    uint32_t v;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { v = s_window_end_ms; }  /* multi-byte, written by the ISR */
    return v;
}

uint16_t hal_pair_rate(void)
{
    uint16_t v;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { v = s_pair_rate; }  /* multi-byte, written by the ISR */
    return v;
}

ISR(USART_RX_vect)
{
    uint8_t status = UCSR0A;
    uint8_t c = UDR0;
    uint8_t next = (uint8_t)((s_rx_head + 1u) & (HAL_UART_RX_RING - 1u));
    (void)status;
    if (next != s_rx_tail) { /* on overflow the byte is lost; the frame CRC then counts it as rx_errors */
        s_rx[s_rx_head] = c;
        s_rx_head = next;
    }
}

ISR(USART_UDRE_vect)
{
    if (s_tx_head == s_tx_tail) {
        UCSR0B &= (uint8_t)~_BV(UDRIE0);
        return;
    }
    UDR0 = s_tx[s_tx_tail];
    s_tx_tail = (uint8_t)((s_tx_tail + 1u) & (HAL_UART_TX_RING - 1u));
}

int16_t hal_uart_getc(void)
{
    uint8_t c;
    if (s_rx_head == s_rx_tail)
        return -1;
    c = s_rx[s_rx_tail];
    s_rx_tail = (uint8_t)((s_rx_tail + 1u) & (HAL_UART_RX_RING - 1u));
    return c;
}

void hal_uart_write(const uint8_t *data, uint8_t len)
{
    while (len--) {
        uint8_t next = (uint8_t)((s_tx_head + 1u) & (HAL_UART_TX_RING - 1u));
        while (next == s_tx_tail) /* ring full: the UDRE interrupt drains it */
            wdt_reset();
        s_tx[s_tx_head] = *data++;
        s_tx_head = next;
        UCSR0B |= _BV(UDRIE0);
    }
}

void hal_watchdog_kick(void) { wdt_reset(); }

void hal_idle(void)
{
    sleep_mode();
}

/* A global cli/sei section rather than masking OCIE1A: a compare match during the section stays pending and is
 * served at sei (simavr 1.6 drops an interrupt whose enable bit was off when its flag rose). The sections only
 * copy a few dozen bytes, so a sample is delayed by a few microseconds at most, never lost. */
static uint8_t s_sreg;
void hal_atomic_begin(void)
{
    uint8_t sreg = SREG;
    cli();
    s_sreg = sreg;
}
void hal_atomic_end(void) { SREG = s_sreg; }

void hal_eeprom_read(uint16_t addr, void *buf, uint8_t len)
{
    eeprom_read_block(buf, (const void *)(uintptr_t)addr, len);
}

uint8_t hal_eeprom_write(uint16_t addr, const void *buf, uint8_t len)
{
    uint8_t check[16];
    const uint8_t *b = buf;
    eeprom_update_block(buf, (void *)(uintptr_t)addr, len); /* writes only the bytes that differ */
    while (len) {
        uint8_t n = len < sizeof check ? len : (uint8_t)sizeof check;
        eeprom_read_block(check, (const void *)(uintptr_t)addr, n);
        if (memcmp(check, b, n) != 0)
            return 0;
        addr += n;
        b += n;
        len -= n;
    }
    return 1;
}
