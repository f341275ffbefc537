/*
 * simmeter: run the real meter firmware (the AVR ELF, unchanged) on a simulated ATmega328P with libsimavr,
 * feed synthetic mains waveforms into ADC0 (voltage) and ADC1 (current), and bridge UART0 to a pseudo-terminal.
 *
 *   simmeter [options] firmware.elf
 *     -t SECONDS        stop after this much simulated time (default: run until SIGTERM/SIGINT)
 *     -w                start the simulation only when the host first writes to the pty (nothing is lost while
 *                       the host opens the port); that byte is delivered to the UART too (send 0x00)
 *     -e FILE           EEPROM image: loaded at start if it exists, written back on exit and on every reset
 *     -l LINK           also create a symlink LINK to the pty
 *     --device-id HEX   write the identity record (16 hex digits) into the EEPROM before start, as the factory
 *                       does (with the firmware's own storage code), so several simulated meters differ
 *     --vrms V --irms A --phase DEG --freq HZ --vh3 R --vh5 R --ih3 R --ih5 R
 *     --vdc MV --idc MV --noise MV --sensor-lag DEG      waveform, see waveform.h
 *   SIGUSR1 resets the MCU (EEPROM kept), as a power cycle would.
 *
 * stderr: "PTY <path>" once the pty is ready, "RESET n" after each reset, and at the end
 * "STATS sim_s=.. wall_s=.. ratio=.. cycles=.. conversions=.. conv_rate=.. resets=.. state=..".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <avr_adc.h>
#include <avr_eeprom.h>
#include <avr_uart.h>
#include <sim_avr.h>
#include <sim_elf.h>
#include <sim_io.h>

#include "../lib/hal.h"
#include "../lib/storage/storage.h"
#include "waveform.h"

#define EEPROM_SIZE 1024

static volatile sig_atomic_t g_stop, g_reset;
static int g_pty = -1;
static int g_xon = 1;
static wave_t g_wave;
static avr_t *g_avr;
static avr_irq_t *g_adc0, *g_adc1;
static unsigned long long g_conversions;
static unsigned long long g_conv_first_cycle, g_conv_last_cycle;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        g_reset = 1;
    else
        g_stop = 1;
}

static void quiet_logger(avr_t *avr, const int level, const char *fmt, va_list ap)
{
    (void)avr;
    if (level <= LOG_WARNING)
        vfprintf(stderr, fmt, ap);
}

static void no_sleep(avr_t *avr, avr_cycle_count_t how_long)
{
    /* libsimavr's default sleeps in real time while the MCU sleeps; we want simulated time to run free. */
    (void)avr;
    (void)how_long;
}

static void on_uart_out(struct avr_irq_t *irq, uint32_t value, void *param)
{
    uint8_t b = (uint8_t)value;
    (void)irq;
    (void)param;
    while (write(g_pty, &b, 1) < 0 && errno == EINTR) {
    }
}

static void on_xon(struct avr_irq_t *irq, uint32_t value, void *param) { (void)irq; (void)value; (void)param; g_xon = 1; }
static void on_xoff(struct avr_irq_t *irq, uint32_t value, void *param) { (void)irq; (void)value; (void)param; g_xon = 0; }

static void on_adc_trigger(struct avr_irq_t *irq, uint32_t value, void *param)
{
    /* Called when a conversion starts: both pins get their voltage at this instant (the sample and hold). */
    double t = (double)g_avr->cycle / (double)g_avr->frequency;
    double v = wave_v_pin_mv(&g_wave, t), i = wave_i_pin_mv(&g_wave, t);
    (void)irq;
    (void)value;
    (void)param;
    if (v < 0) v = 0;
    if (i < 0) i = 0;
    avr_raise_irq(g_adc0, (uint32_t)(v + 0.5));
    avr_raise_irq(g_adc1, (uint32_t)(i + 0.5));
    if (g_conversions++ == 0)
        g_conv_first_cycle = g_avr->cycle;
    g_conv_last_cycle = g_avr->cycle;
}

/* The simulated EEPROM array itself. simavr 1.6's AVR_IOCTL_EEPROM_GET with a NULL buffer hands out a pointer to
 * it (its return value is not meaningful), so loads and saves are plain copies. */
static uint8_t *eeprom_mem(void)
{
    avr_eeprom_desc_t d = {.ee = 0, .offset = 0, .size = EEPROM_SIZE};
    avr_ioctl(g_avr, AVR_IOCTL_EEPROM_GET, &d);
    return d.ee;
}

static void eeprom_io(const char *path, int save)
{
    uint8_t buf[EEPROM_SIZE];
    uint8_t *mem = eeprom_mem();
    FILE *f;
    if (!path || !mem)
        return;
    if (save) {
        f = fopen(path, "wb");
        if (f) {
            fwrite(mem, 1, EEPROM_SIZE, f);
            fclose(f);
        }
        return;
    }
    f = fopen(path, "rb");
    if (!f)
        return;
    if (fread(buf, 1, EEPROM_SIZE, f) == EEPROM_SIZE)
        memcpy(mem, buf, EEPROM_SIZE);
    fclose(f);
}

/* storage.c's HAL, on the simulated EEPROM: the harness writes records exactly as the firmware would. */
void hal_eeprom_read(uint16_t addr, void *buf, uint8_t len)
{
    uint8_t *mem = eeprom_mem();
    if (mem)
        memcpy(buf, mem + addr, len);
}

uint8_t hal_eeprom_write(uint16_t addr, const void *buf, uint8_t len)
{
    uint8_t *mem = eeprom_mem();
    if (!mem)
        return 0;
    memcpy(mem + addr, buf, len);
    return 1;
}

static int parse_id(const char *hex, uint8_t id[8])
{
    if (strlen(hex) != 16)
        return -1;
    for (int k = 0; k < 8; k++) {
        unsigned v;
        if (sscanf(hex + 2 * k, "%2x", &v) != 1)
            return -1;
        id[k] = (uint8_t)v;
    }
    return 0;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int open_pty(const char *link)
{
    struct termios tio;
    int fd = posix_openpt(O_RDWR | O_NOCTTY);
    char *name;
    if (fd < 0 || grantpt(fd) < 0 || unlockpt(fd) < 0)
        return -1;
    tcgetattr(fd, &tio);
    cfmakeraw(&tio);
    tcsetattr(fd, TCSANOW, &tio);
    name = ptsname(fd);
    {
        /* Configure the slave side raw too, so the host sees bytes exactly as sent. */
        int s = open(name, O_RDWR | O_NOCTTY);
        if (s >= 0) {
            tcgetattr(s, &tio);
            cfmakeraw(&tio);
            tcsetattr(s, TCSANOW, &tio);
            close(s);
        }
    }
    if (link) {
        unlink(link);
        if (symlink(name, link) < 0)
            perror("symlink");
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fprintf(stderr, "PTY %s\n", name);
    fflush(stderr);
    return fd;
}

static void usage(void)
{
    fprintf(stderr, "usage: simmeter [-t s] [-w] [-e eeprom.bin] [-l link] [--device-id hex16] [--vrms V --irms A --phase deg "
                    "--freq Hz --vh3 r --vh5 r --ih3 r --ih5 r --vdc mV --idc mV --noise mV --sensor-lag deg] "
                    "firmware.elf\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"vrms", 1, 0, 'V'}, {"irms", 1, 0, 'I'}, {"phase", 1, 0, 'P'}, {"freq", 1, 0, 'F'},
        {"vh3", 1, 0, '3'}, {"vh5", 1, 0, '5'}, {"ih3", 1, 0, '4'}, {"ih5", 1, 0, '6'},
        {"vdc", 1, 0, 'D'}, {"idc", 1, 0, 'd'}, {"noise", 1, 0, 'N'}, {"sensor-lag", 1, 0, 'S'},
        {"device-id", 1, 0, 'i'},
        {0, 0, 0, 0}};
    double limit = 0, t0, wall;
    int wait_host = 0, opt, resets = 0, state = cpu_Running;
    const char *eeprom_path = 0, *link = 0, *device_id = 0;
    elf_firmware_t fw;
    uint32_t flags = 0;
    struct sigaction sa;
    uint8_t rxbuf[256];
    size_t rx_len = 0, rx_pos = 0;
    avr_cycle_count_t next_poll = 0, limit_cycles = 0;

    wave_defaults(&g_wave);
    g_wave.vrms = 127.0;
    g_wave.irms = 5.0;
    while ((opt = getopt_long(argc, argv, "t:we:l:", longopts, 0)) != -1) {
        switch (opt) {
        case 't': limit = atof(optarg); break;
        case 'w': wait_host = 1; break;
        case 'e': eeprom_path = optarg; break;
        case 'l': link = optarg; break;
        case 'V': g_wave.vrms = atof(optarg); break;
        case 'I': g_wave.irms = atof(optarg); break;
        case 'P': g_wave.phase_deg = atof(optarg); break;
        case 'F': g_wave.freq_hz = atof(optarg); break;
        case '3': g_wave.vh3 = atof(optarg); break;
        case '5': g_wave.vh5 = atof(optarg); break;
        case '4': g_wave.ih3 = atof(optarg); break;
        case '6': g_wave.ih5 = atof(optarg); break;
        case 'D': g_wave.v_dc_mv = atof(optarg); break;
        case 'd': g_wave.i_dc_mv = atof(optarg); break;
        case 'N': g_wave.noise_mv = atof(optarg); break;
        case 'S': g_wave.sensor_lag_deg = atof(optarg); break;
        case 'i': device_id = optarg; break;
        default: usage();
        }
    }
    if (optind != argc - 1)
        usage();

    avr_global_logger_set(quiet_logger);
    memset(&fw, 0, sizeof fw);
    if (elf_read_firmware(argv[optind], &fw) != 0) {
        fprintf(stderr, "simmeter: cannot read %s\n", argv[optind]);
        return 1;
    }
    /* The production ELF carries no .mmcu section: the board is an ATmega328P at 16 MHz. */
    if (!fw.mmcu[0])
        strcpy(fw.mmcu, "atmega328p");
    if (!fw.frequency)
        fw.frequency = 16000000;
    g_avr = avr_make_mcu_by_name(fw.mmcu);
    if (!g_avr) {
        fprintf(stderr, "simmeter: unknown MCU %s\n", fw.mmcu);
        return 1;
    }
    avr_init(g_avr);
    avr_load_firmware(g_avr, &fw);
    g_avr->frequency = fw.frequency;
    g_avr->vcc = g_avr->avcc = g_avr->aref = 5000;
    g_avr->sleep = no_sleep;
    g_avr->log = 0;
    eeprom_io(eeprom_path, 0);
    if (device_id) {
        uint8_t id[8];
        if (parse_id(device_id, id) < 0) {
            fprintf(stderr, "simmeter: --device-id needs 16 hex digits\n");
            return 2;
        }
        storage_save_id(id);
    }

    avr_ioctl(g_avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~(uint32_t)(AVR_UART_FLAG_STDIO | AVR_UART_FLAG_POLL_SLEEP);
    avr_ioctl(g_avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    avr_irq_register_notify(avr_io_getirq(g_avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), on_uart_out, 0);
    avr_irq_register_notify(avr_io_getirq(g_avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON), on_xon, 0);
    avr_irq_register_notify(avr_io_getirq(g_avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF), on_xoff, 0);
    g_adc0 = avr_io_getirq(g_avr, AVR_IOCTL_ADC_GETIRQ, ADC_IRQ_ADC0);
    g_adc1 = avr_io_getirq(g_avr, AVR_IOCTL_ADC_GETIRQ, ADC_IRQ_ADC1);
    avr_irq_register_notify(avr_io_getirq(g_avr, AVR_IOCTL_ADC_GETIRQ, ADC_IRQ_OUT_TRIGGER), on_adc_trigger, 0);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, 0);
    sigaction(SIGINT, &sa, 0);
    sigaction(SIGUSR1, &sa, 0);
    signal(SIGPIPE, SIG_IGN);

    g_pty = open_pty(link);
    if (g_pty < 0) {
        perror("simmeter: pty");
        return 1;
    }
    if (wait_host) {
        /* Wait for the host's first byte: it has the port open and will not miss output. */
        while (!g_stop) {
            ssize_t n = read(g_pty, rxbuf, sizeof rxbuf);
            if (n > 0) {
                rx_len = (size_t)n;
                break;
            }
            usleep(1000);
        }
    }

    t0 = wall_now();
    if (limit > 0)
        limit_cycles = (avr_cycle_count_t)(limit * fw.frequency);
    while (!g_stop) {
        state = avr_run(g_avr);
        if (state == cpu_Done || state == cpu_Crashed)
            break;
        if (limit_cycles && g_avr->cycle >= limit_cycles)
            break;
        if (g_avr->cycle < next_poll)
            continue;
        next_poll = g_avr->cycle + 1600; /* every 100 us of simulated time, about one byte time at 115200 */
        if (g_reset) {
            g_reset = 0;
            eeprom_io(eeprom_path, 1);
            {
                /* A reset keeps the EEPROM, as on the real chip: save it around simavr's reset. */
                uint8_t keep[EEPROM_SIZE];
                uint8_t *mem = eeprom_mem();
                if (mem)
                    memcpy(keep, mem, EEPROM_SIZE);
                avr_reset(g_avr);
                mem = eeprom_mem();
                if (mem)
                    memcpy(mem, keep, EEPROM_SIZE);
            }
            g_xon = 1;
            resets++;
            fprintf(stderr, "RESET %d\n", resets);
            fflush(stderr);
        }
        if (rx_pos >= rx_len) {
            ssize_t n = read(g_pty, rxbuf, sizeof rxbuf);
            rx_pos = 0;
            rx_len = n > 0 ? (size_t)n : 0;
        }
        if (rx_pos < rx_len && g_xon)
            avr_raise_irq(avr_io_getirq(g_avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT), rxbuf[rx_pos++]);
    }
    wall = wall_now() - t0;
    eeprom_io(eeprom_path, 1);
    {
        double sim = (double)g_avr->cycle / fw.frequency;
        double span = (double)(g_conv_last_cycle - g_conv_first_cycle) / fw.frequency;
        fprintf(stderr, "STATS sim_s=%.3f wall_s=%.3f ratio=%.2f cycles=%llu conversions=%llu conv_rate=%.1f "
                        "resets=%d state=%d\n",
                sim, wall, wall > 0 ? sim / wall : 0.0, (unsigned long long)g_avr->cycle, g_conversions,
                span > 0 ? (double)(g_conversions - 1) / span : 0.0, resets, state);
        fflush(stderr);
    }
    if (link)
        unlink(link);
    close(g_pty);
    return 0;
}
