/*
 * AICSS serial protocol v1 frame codec (docs/protocol.md), portable C, no I/O.
 *
 * Decoded frame (before COBS), at most 64 bytes:
 *
 *   +---------+------+---------------------------+-----------+
 *   | version | kind | payload (0..60 bytes)     | crc16     |
 *   |  u8 = 1 |  u8  | fixed layout per kind, LE | u16 LE    |
 *   +---------+------+---------------------------+-----------+
 *
 * On the wire: COBS(decoded frame) followed by one 0x00 delimiter, at most 65 + 1 bytes.
 * CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR) over version, kind, payload.
 *
 * The encoder writes into a caller buffer; the streaming decoder takes one byte at a time and never buffers
 * more than FRAME_MAX_ENCODED bytes, so it fits the ATmega328P and runs unchanged on the host.
 */
#ifndef CDS_FRAMES_H
#define CDS_FRAMES_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_VERSION 1u
#define FRAME_MAX 64u
#define FRAME_MAX_ENCODED (FRAME_MAX + 1u)
#define FRAME_MAX_WIRE (FRAME_MAX_ENCODED + 1u) /* with the 0x00 delimiter */
#define FRAME_MAX_LOG_TEXT 48u

enum frame_kind {
    FRAME_HELLO = 0x01,
    FRAME_READING = 0x02,
    FRAME_STATUS = 0x03,
    FRAME_LOG = 0x04,
    FRAME_CONFIG_RESULT = 0x05,
    FRAME_READING2 = 0x06,
    FRAME_ACK = 0x10,
    FRAME_CONFIG = 0x11,
    FRAME_SYNC = 0x12,
};

/* Payload sizes per kind (LOG: 1 + 0..48). */
#define FRAME_LEN_HELLO 20u
#define FRAME_LEN_READING 38u
#define FRAME_LEN_READING2 46u /* READING + energy_export_mwh u64 */
#define FRAME_LEN_STATUS 18u
#define FRAME_LEN_CONFIG_RESULT 17u
#define FRAME_LEN_ACK 8u
#define FRAME_LEN_CONFIG 16u
#define FRAME_LEN_SYNC 0u

/* READING flags */
#define READING_RESENT (1u << 0)
#define READING_V_CLIP (1u << 1)
#define READING_I_CLIP (1u << 2)
#define READING_UNCALIBRATED (1u << 3)
#define READING_NO_SIGNAL (1u << 4)
#define READING_FIRST_AFTER_BOOT (1u << 5)

#define CONFIG_KEEP 0u
#define CONFIG_KEEP_PHASE (-32768)
#define CONFIG_APPLIED 0u
#define CONFIG_REJECTED 1u
#define CONFIG_STORAGE_ERROR 2u

/* Decoder results; the error names match the counters of docs/protocol.md section 1. */
typedef enum {
    FRAME_NONE = 0,      /* need more bytes */
    FRAME_OK,            /* a complete valid frame */
    FRAME_ERR_COBS,
    FRAME_ERR_SHORT,
    FRAME_ERR_CRC,
    FRAME_ERR_VERSION,
    FRAME_ERR_KIND,
    FRAME_ERR_LENGTH,
    FRAME_ERR_OVERSIZE,
    FRAME_ERR_VALUE,
} frame_status_t;

typedef struct {
    uint8_t device_id[8];
    uint8_t fw_major, fw_minor, fw_patch, hw_rev;
    uint32_t boot_count;
    uint32_t report_period_ms;
} frame_hello_t;

typedef struct {
    uint32_t seq;
    uint32_t uptime_ms;
    uint32_t vrms_mv;
    uint32_t irms_ma;
    int32_t p_dw;
    uint32_t s_dva;
    int16_t pf_milli;
    uint16_t freq_mhz;
    uint64_t energy_mwh;        /* imported-energy register */
    uint16_t flags;
    uint64_t energy_export_mwh; /* exported-energy register: READING2 only (a READING does not carry it) */
} frame_reading_t;

typedef struct {
    uint32_t oldest_seq;
    uint32_t next_seq;
    uint16_t queued;
    uint32_t dropped;
    uint16_t rx_errors;
    uint16_t sample_rate_hz;
} frame_status_msg_t;

typedef struct {
    uint8_t level;
    uint8_t text_len;
    char text[FRAME_MAX_LOG_TEXT];
} frame_log_t;

typedef struct {
    uint16_t request_id;
    uint8_t status;
    uint32_t report_period_ms;
    uint32_t v_gain;
    uint32_t i_gain;
    int16_t phase_cdeg;
} frame_config_result_t;

typedef struct {
    uint32_t boot_count;
    uint32_t seq;
} frame_ack_t;

typedef struct {
    uint16_t request_id;
    uint32_t report_period_ms;
    uint32_t v_gain;
    uint32_t i_gain;
    int16_t phase_cdeg;
} frame_config_t;

/* READING and READING2 share frame_reading_t; the kind says which layout is on the wire. */
typedef struct {
    uint8_t kind;
    union {
        frame_hello_t hello;
        frame_reading_t reading;
        frame_status_msg_t status;
        frame_log_t log;
        frame_config_result_t config_result;
        frame_ack_t ack;
        frame_config_t config;
    } u;
} frame_t;

typedef struct {
    uint8_t buf[FRAME_MAX_ENCODED];
    uint8_t len;
    uint8_t discarding; /* after an oversize error, until the next 0x00 */
} frame_decoder_t;

uint16_t frame_crc16(const uint8_t *data, size_t len);

/* COBS, Cheshire & Baker 1999. Return the output length, or 0 if the input is invalid / does not fit. */
size_t cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap);
size_t cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap, int *ok);

/* version + kind + payload + CRC into raw[FRAME_MAX]; returns the length, 0 if the frame is not encodable. */
size_t frame_encode_raw(const frame_t *f, uint8_t raw[FRAME_MAX]);
/* COBS + delimiter into wire[FRAME_MAX_WIRE]; returns the number of bytes to send, 0 if not encodable. */
size_t frame_encode(const frame_t *f, uint8_t wire[FRAME_MAX_WIRE]);

frame_status_t frame_decode_raw(const uint8_t *raw, size_t len, frame_t *out);
/* One COBS-encoded frame without its delimiter. */
frame_status_t frame_decode_wire(const uint8_t *enc, size_t len, frame_t *out);

void frame_decoder_init(frame_decoder_t *d);
/* Feed one byte. Returns FRAME_NONE until a delimiter completes a non-empty frame (or an error is seen). */
frame_status_t frame_decoder_push(frame_decoder_t *d, uint8_t byte, frame_t *out);

const char *frame_status_name(frame_status_t st);

#endif
