"""Pure Melexis MLX90640 maths: calibration parameters from the EEPROM, object temperatures from RAM.

Follows the datasheet (section 11, "Calculating object temperature"): restore the supply
and ambient sensor parameters, per-pixel offset, sensitivity (alpha), Kta and Kv, the
compensation pixels, then per subpage Vdd, Ta, gain, IR compensation and To with the extended
temperature ranges. Chess reading pattern only (the default). No I/O: the driver reads the
832 EEPROM words (0x2400...) and 832 RAM words (0x0400...) and hands them over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

ROWS, COLS = 24, 32
PIXELS = ROWS * COLS
EEPROM_WORDS = 832
RAM_WORDS = 832
KELVIN = 273.15

# RAM word indices (address - 0x0400)
RAM_TA_VBE = 0x0300
RAM_CP_SP0 = 0x0308
RAM_GAIN = 0x030A
RAM_TA_PTAT = 0x0320
RAM_CP_SP1 = 0x0328
RAM_VDD_PIX = 0x032A

Floats = npt.NDArray[np.float64]


class CalibrationError(ValueError):
    """An EEPROM image that cannot be a calibrated MLX90640 (wrong size, too many failed pixels)."""


def _s(value: int | npt.NDArray[np.int64], bits: int) -> npt.NDArray[np.int64]:
    """Two's complement of a ``bits``-wide field (the datasheet's "if x > 2^(n-1) - 1: x -= 2^n")."""
    v = np.asarray(value, dtype=np.int64)
    return np.where(v >= 1 << (bits - 1), v - (1 << bits), v)


def _si(value: int, bits: int) -> int:
    return int(_s(value, bits))


def _nibbles(words: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Signed 4-bit fields, lowest nibble of the first word first."""
    n = np.stack([(words >> shift) & 0xF for shift in (0, 4, 8, 12)], axis=1).reshape(-1)
    return _s(n, 4)


def chess_subpage() -> npt.NDArray[np.int64]:
    """Which subpage (0 or 1) measures each pixel in chess mode: row parity XOR column parity."""
    rows, cols = np.divmod(np.arange(PIXELS, dtype=np.int64), COLS)
    parity: npt.NDArray[np.int64] = (rows % 2) ^ (cols % 2)
    return parity


@dataclass(frozen=True)
class Calibration:
    """Everything the temperature calculation needs, restored once from the EEPROM."""

    kvdd: int
    vdd25: int
    kv_ptat: float
    kt_ptat: float
    vptat25: int
    alpha_ptat: float
    gain_ee: int
    resolution_ee: int
    ks_ta: float
    ks_to: tuple[float, float, float, float]
    corner_temps_c: tuple[int, int, int, int]
    tgc: float
    alpha_cp: tuple[float, float]
    offset_cp: tuple[int, int]
    kta_cp: float
    kv_cp: float
    offset_ref: npt.NDArray[np.int64] = field(repr=False)
    alpha: Floats = field(repr=False)
    kta: Floats = field(repr=False)
    kv: Floats = field(repr=False)
    broken_pixels: tuple[int, ...] = ()
    outlier_pixels: tuple[int, ...] = ()


def extract(eeprom: Sequence[int] | npt.NDArray[np.integer]) -> Calibration:
    """Restore the calibration from the 832 EEPROM words (datasheet 11.1)."""
    ee = np.asarray(eeprom, dtype=np.int64)
    if ee.shape != (EEPROM_WORDS,):
        raise CalibrationError(f"expected {EEPROM_WORDS} EEPROM words, got {ee.shape}")
    w = [int(x) for x in ee[:0x40]]
    pix = ee[0x40:]

    kvdd = _si(w[0x33] >> 8, 8) * 32
    vdd25 = ((w[0x33] & 0xFF) - 256) * 32 - 8192
    kv_ptat = _si((w[0x32] & 0xFC00) >> 10, 6) / 4096
    kt_ptat = _si(w[0x32] & 0x03FF, 10) / 8
    vptat25 = _si(w[0x31], 16)
    alpha_ptat = ((w[0x10] & 0xF000) >> 12) / 4 + 8
    gain_ee = _si(w[0x30], 16)
    resolution_ee = (w[0x38] & 0x3000) >> 12

    rows, cols = np.divmod(np.arange(PIXELS), COLS)

    # offsets
    occ_row = _nibbles(ee[0x12:0x18])
    occ_col = _nibbles(ee[0x18:0x20])
    occ_scale_row, occ_scale_col, occ_scale_rem = (w[0x10] >> 8) & 0xF, (w[0x10] >> 4) & 0xF, w[0x10] & 0xF
    offset_avg = _si(w[0x11], 16)
    offset_ref = (
        offset_avg
        + occ_row[rows] * (1 << occ_scale_row)
        + occ_col[cols] * (1 << occ_scale_col)
        + _s((pix & 0xFC00) >> 10, 6) * (1 << occ_scale_rem)
    )

    # sensitivities
    acc_row = _nibbles(ee[0x22:0x28])
    acc_col = _nibbles(ee[0x28:0x30])
    acc_scale_row, acc_scale_col, acc_scale_rem = (w[0x20] >> 8) & 0xF, (w[0x20] >> 4) & 0xF, w[0x20] & 0xF
    alpha_scale = ((w[0x20] & 0xF000) >> 12) + 30
    alpha = (
        w[0x21]
        + acc_row[rows] * (1 << acc_scale_row)
        + acc_col[cols] * (1 << acc_scale_col)
        + _s((pix & 0x03F0) >> 4, 6) * (1 << acc_scale_rem)
    ) / 2.0**alpha_scale

    # Kta and Kv: one value per (row parity, column parity), 1-based odd/even as the datasheet says
    split = (rows % 2) * 2 + (cols % 2)  # 0: row odd col odd (1-based), 1: odd/even, 2: even/odd, 3: even/even
    kta_rc = np.array([_si(w[0x36] >> 8, 8), _si(w[0x37] >> 8, 8), _si(w[0x36] & 0xFF, 8), _si(w[0x37] & 0xFF, 8)])
    kta_scale1 = ((w[0x38] & 0x00F0) >> 4) + 8
    kta_scale2 = w[0x38] & 0x000F
    kta = (kta_rc[split] + _s((pix & 0x000E) >> 1, 3) * (1 << kta_scale2)) / 2.0**kta_scale1
    kv_rc = np.array([_si(w[0x34] >> 12, 4), _si((w[0x34] >> 4) & 0xF, 4),
                      _si((w[0x34] >> 8) & 0xF, 4), _si(w[0x34] & 0xF, 4)])  # fmt: skip
    kv_scale = (w[0x38] & 0x0F00) >> 8
    kv = kv_rc[split] / 2.0**kv_scale

    # compensation pixels, gradient, KsTa, KsTo and the corner temperatures
    alpha_scale_cp = ((w[0x20] & 0xF000) >> 12) + 27
    cp_ratio = _si((w[0x39] & 0xFC00) >> 10, 6) / 128
    alpha_cp0 = (w[0x39] & 0x03FF) / 2.0**alpha_scale_cp
    offset_cp0 = _si(w[0x3A] & 0x03FF, 10)
    offset_cp1 = offset_cp0 + _si((w[0x3A] & 0xFC00) >> 10, 6)
    ks_to_scale = (w[0x3F] & 0x000F) + 8
    step = ((w[0x3F] & 0x3000) >> 12) * 10
    ct3 = ((w[0x3F] & 0x00F0) >> 4) * step
    ct4 = ct3 + ((w[0x3F] & 0x0F00) >> 8) * step
    ks_to = tuple(_si(x, 8) / 2.0**ks_to_scale
                  for x in (w[0x3D] & 0xFF, w[0x3D] >> 8, w[0x3E] & 0xFF, w[0x3E] >> 8))  # fmt: skip

    broken = tuple(int(i) for i in np.flatnonzero(pix == 0))
    outliers = tuple(int(i) for i in np.flatnonzero((pix & 1) == 1))
    if len(broken) + len(outliers) > 4:
        raise CalibrationError(f"{len(broken)} failed and {len(outliers)} outlier pixels: more than the 4 allowed")
    return Calibration(
        kvdd=kvdd, vdd25=vdd25, kv_ptat=kv_ptat, kt_ptat=kt_ptat, vptat25=vptat25, alpha_ptat=alpha_ptat,
        gain_ee=gain_ee, resolution_ee=resolution_ee, ks_ta=_si(w[0x3C] >> 8, 8) / 8192,
        ks_to=ks_to,  # type: ignore[arg-type]
        corner_temps_c=(-40, 0, ct3, ct4), tgc=_si(w[0x3C] & 0xFF, 8) / 32,
        alpha_cp=(alpha_cp0, alpha_cp0 * (1 + cp_ratio)), offset_cp=(offset_cp0, offset_cp1),
        kta_cp=_si(w[0x3B] & 0xFF, 8) / 2.0**kta_scale1, kv_cp=_si(w[0x3B] >> 8, 8) / 2.0**kv_scale,
        offset_ref=offset_ref, alpha=alpha, kta=kta, kv=kv, broken_pixels=broken, outlier_pixels=outliers,
    )  # fmt: skip


@dataclass(frozen=True)
class Subpage:
    """One subpage's result: supply voltage, ambient temperature, and To for its half of the pixels."""

    subpage: int
    vdd_v: float
    ta_c: float
    to_c: Floats = field(repr=False)  # (768,), NaN where the other subpage measures


def resolution_correction(cal: Calibration, control_register: int) -> float:
    """2^(EEPROM resolution) / 2^(current ADC resolution, control register bits 11-10)."""
    return 2.0 ** cal.resolution_ee / 2.0 ** ((control_register & 0x0C00) >> 10)


def supply_voltage(cal: Calibration, ram: npt.NDArray[np.int64], control_register: int) -> float:
    vdd_raw = _si(int(ram[RAM_VDD_PIX]), 16)
    return (resolution_correction(cal, control_register) * vdd_raw - cal.vdd25) / cal.kvdd + 3.3


def ambient_temperature(cal: Calibration, ram: npt.NDArray[np.int64], vdd_v: float) -> float:
    vptat = _si(int(ram[RAM_TA_PTAT]), 16)
    vbe = _si(int(ram[RAM_TA_VBE]), 16)
    vptat_art = vptat / (vptat * cal.alpha_ptat + vbe) * 2**18
    return (vptat_art / (1 + cal.kv_ptat * (vdd_v - 3.3)) - cal.vptat25) / cal.kt_ptat + 25


def temperatures(
    cal: Calibration,
    ram_words: Sequence[int] | npt.NDArray[np.integer],
    subpage: int,
    control_register: int,
    *,
    emissivity: float = 1.0,
    reflected_c: float | None = None,
) -> Subpage:
    """Object temperatures (degrees C) of the pixels ``subpage`` measured (datasheet 11.2).

    ``reflected_c`` is the temperature of what the object reflects; None takes the sensor's
    ambient temperature minus 8 (Melexis' figure for the sensor's self-heating in open air).
    It does not matter at emissivity 1.
    """
    ram = np.asarray(ram_words, dtype=np.int64)
    if ram.shape != (RAM_WORDS,):
        raise CalibrationError(f"expected {RAM_WORDS} RAM words, got {ram.shape}")
    if subpage not in (0, 1):
        raise ValueError("subpage is 0 or 1")
    vdd = supply_voltage(cal, ram, control_register)
    ta = ambient_temperature(cal, ram, vdd)
    tr = ta - 8 if reflected_c is None else reflected_c
    d_ta, d_v = ta - 25, vdd - 3.3
    k_gain = cal.gain_ee / _si(int(ram[RAM_GAIN]), 16)

    cp_raw = _si(int(ram[RAM_CP_SP0 if subpage == 0 else RAM_CP_SP1]), 16)
    offset_cp = cal.offset_cp[subpage]
    pix_os_cp = cp_raw * k_gain - offset_cp * (1 + cal.kta_cp * d_ta) * (1 + cal.kv_cp * d_v)

    mask = chess_subpage() == subpage
    pix_gain = _s(ram[:PIXELS], 16) * k_gain
    pix_os = pix_gain - cal.offset_ref * (1 + cal.kta * d_ta) * (1 + cal.kv * d_v)
    v_ir = pix_os / emissivity - cal.tgc * pix_os_cp
    alpha_comp = (cal.alpha - cal.tgc * cal.alpha_cp[subpage]) * (1 + cal.ks_ta * d_ta)

    ta_k4 = (ta + KELVIN) ** 4
    tr_k4 = (tr + KELVIN) ** 4
    ta_r = tr_k4 - (tr_k4 - ta_k4) / emissivity
    ks_to = np.array(cal.ks_to)
    ct = np.array(cal.corner_temps_c, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        sx = ks_to[1] * np.sqrt(np.sqrt(alpha_comp**3 * v_ir + alpha_comp**4 * ta_r))
        to = np.sqrt(np.sqrt(v_ir / (alpha_comp * (1 - ks_to[1] * KELVIN) + sx) + ta_r)) - KELVIN
        # extended ranges: sensitivity corrected per temperature range between the corner temperatures
        alpha_corr = np.empty(4)
        alpha_corr[0] = 1 / (1 + ks_to[0] * (ct[1] - ct[0]))
        alpha_corr[1] = 1.0
        alpha_corr[2] = 1 + ks_to[1] * (ct[2] - ct[1])
        alpha_corr[3] = alpha_corr[2] * (1 + ks_to[2] * (ct[3] - ct[2]))
        rng = np.clip(np.searchsorted(ct[1:], to, side="right"), 0, 3)
        to = np.sqrt(np.sqrt(v_ir / (alpha_comp * alpha_corr[rng] * (1 + ks_to[rng] * (to - ct[rng]))) + ta_r)) - KELVIN
    return Subpage(subpage, vdd, ta, np.where(mask, to, np.nan))
