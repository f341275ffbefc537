"""Flash and static RAM budget of the AVR firmware (avr-size): flash <= 24 KB, .data + .bss <= 1.2 KB of 2 KB."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.firmware.fwlib import FirmwareBuild

pytestmark = pytest.mark.firmware

FLASH_BUDGET = 24 * 1024
RAM_BUDGET = 1229  # 1.2 KB (of the ATmega328P's 2048 B, the rest is stack)


def test_avr_size_within_budget(fw_build: FirmwareBuild, figure: Callable[[str], None]) -> None:
    figure(
        f"avr-size: flash {fw_build.flash_bytes} B of {FLASH_BUDGET} B budget (32768 B chip), "
        f"static RAM {fw_build.ram_bytes} B of {RAM_BUDGET} B budget (2048 B chip)"
    )
    assert fw_build.flash_bytes <= FLASH_BUDGET
    assert fw_build.ram_bytes <= RAM_BUDGET
    hex_text = fw_build.hex.read_text()
    assert hex_text.startswith(":") and hex_text.rstrip().endswith(":00000001FF")
