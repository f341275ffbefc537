/* Host HAL: the EEPROM is a 1 KB array (erased = 0xFF), with write counting and fault injection for tests. */
#include <string.h>

#include "../lib/hal.h"
#include "hal_host.h"

uint8_t host_eeprom[HAL_EEPROM_SIZE];
uint32_t host_eeprom_writes[HAL_EEPROM_SIZE];
int host_eeprom_fail_writes;

void host_eeprom_erase(void)
{
    memset(host_eeprom, 0xFF, sizeof host_eeprom);
    memset(host_eeprom_writes, 0, sizeof host_eeprom_writes);
    host_eeprom_fail_writes = 0;
}

void hal_eeprom_read(uint16_t addr, void *buf, uint8_t len)
{
    memcpy(buf, host_eeprom + addr, len);
}

uint8_t hal_eeprom_write(uint16_t addr, const void *buf, uint8_t len)
{
    const uint8_t *b = buf;
    if (host_eeprom_fail_writes)
        return 0; /* a worn-out cell: the write does not take */
    for (uint8_t k = 0; k < len; k++) {
        if (host_eeprom[addr + k] != b[k]) {
            host_eeprom[addr + k] = b[k];
            host_eeprom_writes[addr + k]++;
        }
    }
    return memcmp(host_eeprom + addr, buf, len) == 0;
}
