#ifndef CDS_HAL_HOST_H
#define CDS_HAL_HOST_H
#include <stdint.h>
#include "../lib/hal.h"
extern uint8_t host_eeprom[HAL_EEPROM_SIZE];
extern uint32_t host_eeprom_writes[HAL_EEPROM_SIZE];
extern int host_eeprom_fail_writes;
void host_eeprom_erase(void);
#endif
