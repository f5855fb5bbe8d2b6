"""Synthetic machine and power-line sounds with labelled faults, written in the DCASE 2020 Task 2 layout.

Over 500 lines on purpose: it is one generator, a constant for every physical choice (each commented) and a
renderer per machine and fault; the choosing data of the detection benchmark comes from it.
"""

from __future__ import annotations

import argparse
import csv
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.audio.audio_io import write_wav
from device.errors import AcmonError

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------------
MACHINE_TYPES = ("pump", "fan", "gearbox", "transformer")
FAULTS_BY_TYPE = {
    "pump": ["bearing", "rubbing", "imbalance", "cavitation"],
    "fan": ["bearing", "rubbing", "imbalance", "blade"],
    "gearbox": ["gear_tooth", "bearing", "rubbing", "imbalance"],
    "transformer": ["corona"],
}

# --------------------------------------------------------------------------------------------------
# Dataset layout (DCASE 2020 Task 2)
# --------------------------------------------------------------------------------------------------
SAMPLE_RATE_HZ = 16000
MIN_SAMPLE_RATE_HZ = 8000
MAX_MACHINE_ID = 99  # ids are written with two digits
MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("path", "machine_type", "machine_id", "split", "label", "fault", "fault_strength", "snr_db", "seed")
SPLIT_CODES = {"train": 0, "test": 1}
LABEL_CODES = {"normal": 0, "anomaly": 1}
SNR_DECIMALS = 2  # manifest values are rounded before rendering so the manifest regenerates a clip exactly
STRENGTH_DECIMALS = 3

# --------------------------------------------------------------------------------------------------
# Levels
# --------------------------------------------------------------------------------------------------
CLIP_RMS_DBFS_RANGE = (-35.0, -15.0)  # RMS of the fault-free mix (machine + background); a fault adds to it
PEAK_LIMIT = 0.95  # whole clip is scaled down if its peak would exceed this (about -0.45 dBFS)
MAX_FREQ_FRACTION = 0.45  # no synthetic component above 0.45 * sample rate (no aliasing)
NOISE_ROLLOFF_HZ = 7000.0  # gentle high-frequency roll-off of all broadband noise (air absorption, microphone)
INFRASONIC_CORNER_HZ = 10.0  # microphones and the device front end do not see below this

# --------------------------------------------------------------------------------------------------
# Operating-point drift between (and within) clips
# --------------------------------------------------------------------------------------------------
SPEED_DRIFT_FRACTION = 0.04  # shaft speed varies +-4 % between clips (load, supply voltage, VFD setpoint)
SPEED_WANDER_FRACTION = 0.002  # and wanders +-0.2 % inside a clip
SPEED_WANDER_CUTOFF_HZ = 0.5  # slowest-to-fastest wander rate
MAINS_DRIFT_FRACTION = 0.002  # grid frequency stays within +-0.1 Hz of 50 Hz
MAINS_WANDER_FRACTION = 0.0002
TONE_JITTER_FRACTION = 0.10  # per-clip tone amplitude changes of rotating machines
HUM_JITTER_FRACTION = 0.03  # transformer hum harmonics vary by a few percent (flux, temperature)
LOAD_RANGE = (0.75, 1.3)  # per-clip factor on the broadband (flow, air, winding) noise

# --------------------------------------------------------------------------------------------------
# Plant background
# --------------------------------------------------------------------------------------------------
BG_SLOPE_RANGE = (0.5, 1.0)  # magnitude ~ f^-slope: 0.5 is pink, 1.0 is brown
BG_RUMBLE_CORNER_HZ_RANGE = (15.0, 50.0)  # low rumble: building structure, traffic, big slow machines
BG_RUMBLE_GAIN_DB_RANGE = (0.0, 6.0)
BG_TONE_PROBABILITY = 0.5  # chance of a distant machine tone in a clip
BG_TONE_HZ_RANGE = (40.0, 400.0)
BG_TONE_LEVEL_DB_RANGE = (-12.0, -3.0)  # re the background RMS

# --------------------------------------------------------------------------------------------------
# Faults: level of the fault component re the machine RMS at fault_strength 1.0 (scaled linearly,
# so strength 0.1 is 20 dB lower); the additive structure keeps everything else in the clip identical.
# --------------------------------------------------------------------------------------------------
FAULT_LEVEL_DB = {
    "bearing": -6.0,  # RMS of the impulse train
    "rubbing": 4.0,  # RMS inside a burst
    "imbalance": 3.0,  # RMS of the added 1x shaft tone
    "cavitation": -6.0,  # RMS of the crackle
    "blade": 0.0,  # RMS of the once-per-revolution pulse and turbulence
    "corona": -20.0,  # RMS of the crackle
    "gear_tooth": -3.0,  # RMS of the once-per-revolution impact
}
BEARING_JITTER_FRACTION = 0.015  # rolling elements slip: defect intervals jitter by ~1-2 %
BEARING_LOAD_ZONE_DEPTH = 0.6  # impact strength modulated once per shaft turn
IMBALANCE_AM_DEPTH = 0.4  # amplitude modulation of the whole machine at the shaft rate
IMBALANCE_HARMONICS_DB = ((1, 0.0), (2, -10.0), (3, -16.0))  # (multiple of shaft rate, level re 1x)
RUB_RATE_HZ_RANGE = (2.0, 5.0)  # bursts per second
CAVITATION_PULSE_RATE_HZ = 3000.0  # bubble collapses per second inside a burst
CAVITATION_HIGHPASS_HZ = 1500.0
BLADE_MISSING_DEPTH = 0.8  # fraction of the damaged blade's pressure pulse that is lost
CORONA_HIGHPASS_HZ = 2000.0
CORONA_JITTER_S = 0.6e-3  # discharges scatter around the voltage peak
CORONA_PULSE_DECAY_S = 0.3e-3  # each discharge is a sub-millisecond broadband burst
CORONA_HUM_INCREASE = 0.3  # extra hum harmonics (>= 200 Hz) at strength 1
GEAR_TOOTH_MESH_DIP = 0.6  # the chipped tooth carries less load: mesh tone dips once per turn
GEAR_TOOTH_DECAY_S = 3e-3

# --------------------------------------------------------------------------------------------------
# Demo dataset (python -m training synth --demo)
# --------------------------------------------------------------------------------------------------
DEMO_MACHINE_TYPE = "pump"
DEMO_MACHINE_ID = 0
DEMO_N_TRAIN = 24
DEMO_N_TEST_NORMAL = 4
DEMO_N_TEST_ANOMALY = 4
DEMO_SECONDS = 6.0
DEMO_SNR_DB_RANGE = (6.0, 12.0)
DEMO_FAULT_STRENGTH_RANGE = (0.8, 1.0)

TRANSFORMER_60HZ_EVERY = 4  # transformer ids 3, 7, 11, ... are on 60 Hz mains (120 Hz hum), the others on 50 Hz
PROFILE_SALT = 0x5EED  # changes every machine's character if changed: keep fixed


# ==================================================================================================
# Machine profiles: the fixed character of one machine (type, id)
# ==================================================================================================
@dataclass(frozen=True)
class MachineProfile:
    """Fixed acoustic character of one machine, derived deterministically from (type, id).

    Attributes:
        machine_type: one of MACHINE_TYPES.
        machine_id: the machine id (0-99 in datasets).
        base_hz: nominal shaft rate in Hz (rotating machines) or mains frequency in Hz (transformer).
        mains_hz: 50.0 or 60.0 for a transformer, 0.0 for rotating machines.
        tone_mults: frequency of each tonal component as a multiple of base_hz.
        tone_amps: amplitude of each tone; sum(a**2) / 2 == 1, i.e. the tones have unit RMS.
        tone_groups: component group of each tone ("shaft", "blade", "mesh", "sideband", "hum", "hum_high").
        blade_count: pump vanes, fan blades or gear teeth (0 for a transformer).
        noise_slope: broadband magnitude falls as f**-noise_slope (0.5 = pink).
        noise_resonances: (center_hz, bandwidth_hz, gain) of resonances shaping the broadband noise.
        noise_to_tone_db: RMS of the broadband noise re the tones at nominal load.
        bearing_mult: bearing defect rate as a multiple of the shaft rate (like a BPFO, not an integer).
        bearing_resonance_hz: structural resonance the bearing impacts ring at (2-5 kHz).
        bearing_decay_s: time constant of that ringing in s.
        rub_band_hz: (low_hz, high_hz) band of rubbing noise.
        casing_resonance_hz: casing resonance excited by gear impacts.
    """

    machine_type: str
    machine_id: int
    base_hz: float
    mains_hz: float
    tone_mults: tuple[float, ...]
    tone_amps: tuple[float, ...]
    tone_groups: tuple[str, ...]
    blade_count: int
    noise_slope: float
    noise_resonances: tuple[tuple[float, float, float], ...]
    noise_to_tone_db: float
    bearing_mult: float
    bearing_resonance_hz: float
    bearing_decay_s: float
    rub_band_hz: tuple[float, float]
    casing_resonance_hz: float


def _type_code(machine_type: str) -> int:
    """A stable integer for a machine type name (Python's hash() is salted per process)."""
    return zlib.crc32(machine_type.encode("utf-8"))


def _check_machine_type(machine_type: str, argument: str = "machine_type") -> None:
    if machine_type not in MACHINE_TYPES:
        raise AcmonError(f"{argument}: unknown machine type {machine_type!r}; allowed: {', '.join(MACHINE_TYPES)}")


def machine_profile(machine_type: str, machine_id: int) -> MachineProfile:
    """The fixed character of machine (machine_type, machine_id); same inputs give the same profile.

    Raises:
        AcmonError: unknown machine type or negative id.
    """
    _check_machine_type(machine_type)
    if int(machine_id) < 0:
        raise AcmonError(f"machine_id: must be >= 0, got {machine_id}")
    rng = np.random.default_rng([PROFILE_SALT, _type_code(machine_type), int(machine_id)])
    mults: list[float] = []
    amps: list[float] = []
    groups: list[str] = []

    def add(mult: float, amp: float, group: str) -> None:
        mults.append(float(mult))
        amps.append(float(amp))
        groups.append(group)

    mains_hz = 0.0
    blade_count = 0
    if machine_type == "pump":
        # Centrifugal pump on an induction motor: 2- or 4-pole, 24-49 Hz shaft. Shaft harmonics come from
        # residual unbalance and misalignment and are weak; the vane-pass tone (vanes x shaft) from the
        # impeller passing the volute tongue dominates. Flow turbulence is shaped by pipe/casing resonances.
        base_hz = rng.uniform(24.0, 49.0)
        blade_count = int(rng.integers(5, 9))
        for k in range(1, 7):
            add(k, 0.35 / k * rng.uniform(0.5, 1.5), "shaft")
        for k, a in zip(range(1, 4), (1.0, 0.45, 0.2)):
            add(k * blade_count, a * rng.uniform(0.6, 1.4), "blade")
        c1, c2 = rng.uniform(300.0, 1200.0), rng.uniform(1500.0, 4000.0)
        resonances: tuple[tuple[float, float, float], ...] = (
            (c1, c1 * rng.uniform(0.3, 0.6), rng.uniform(2.0, 10.0)),
            (c2, c2 * 0.3, rng.uniform(1.0, 6.0)),
        )
        noise_slope, noise_to_tone_db = rng.uniform(0.1, 0.5), rng.uniform(-6.0, 0.0)
    elif machine_type == "fan":
        # Axial/centrifugal fan: slow shaft (12-25 Hz), 5-12 blades. Blade-pass tone and harmonics over strong
        # pinkish air turbulence with one broad hump from the duct.
        base_hz = rng.uniform(12.0, 25.0)
        blade_count = int(rng.integers(5, 13))
        for k, a in zip(range(1, 4), (0.15, 0.08, 0.05)):
            add(k, a * rng.uniform(0.5, 1.5), "shaft")
        for k, a in zip(range(1, 6), (1.0, 0.5, 0.3, 0.15, 0.1)):
            add(k * blade_count, a * rng.uniform(0.6, 1.4), "blade")
        c1 = rng.uniform(400.0, 1500.0)
        c2 = rng.uniform(2000.0, 5000.0)
        resonances = ((c1, c1, rng.uniform(1.0, 4.0)), (c2, c2 * 0.5, rng.uniform(0.3, 2.0)))
        noise_slope, noise_to_tone_db = rng.uniform(0.35, 0.7), rng.uniform(4.0, 9.0)
    elif machine_type == "gearbox":
        # Spur/helical gear stage: the mesh tone is teeth x shaft rate. Load and transmission error vary once
        # per turn, which amplitude-modulates the mesh tone and puts sidebands at +-k x shaft around it.
        base_hz = rng.uniform(15.0, 40.0)
        blade_count = int(rng.integers(17, 42))  # teeth
        for k, a in zip(range(1, 3), (0.3, 0.15)):
            add(k, a * rng.uniform(0.5, 1.5), "shaft")
        for k, a in zip(range(1, 4), (1.0, 0.45, 0.2)):
            mesh_amp = a * rng.uniform(0.7, 1.3)
            add(k * blade_count, mesh_amp, "mesh")
            for j in range(1, 4):
                for sign in (-1, 1):
                    add(k * blade_count + sign * j, mesh_amp * 0.3 * 0.6 ** (j - 1) * rng.uniform(0.5, 1.5), "sideband")
        c1 = rng.uniform(1000.0, 3500.0)
        resonances = ((c1, c1 * 0.4, rng.uniform(2.0, 8.0)),)
        noise_slope, noise_to_tone_db = rng.uniform(0.1, 0.4), rng.uniform(-8.0, -3.0)
    else:  # transformer
        # Magnetostriction makes the core lengthen twice per voltage cycle: the hum is at 2 x mains
        # (100 Hz for 50 Hz mains) with even harmonics of mains from core non-linearity. Cooling fans and
        # windings add a faint broadband.
        mains_hz = 60.0 if machine_id % TRANSFORMER_60HZ_EVERY == TRANSFORMER_60HZ_EVERY - 1 else 50.0
        base_hz = mains_hz
        add(2, 1.0, "hum")
        for h in range(2, 9):  # 200 ... 800 Hz for 50 Hz mains
            add(2 * h, min(0.6, 0.9 * h**-0.8 * rng.uniform(0.3, 1.2)), "hum_high")
        c1 = rng.uniform(300.0, 1000.0)
        resonances = ((c1, c1 * 0.8, rng.uniform(1.0, 4.0)),)
        noise_slope, noise_to_tone_db = rng.uniform(0.3, 0.8), rng.uniform(-26.0, -16.0)

    amps_arr = np.asarray(amps)
    amps_arr = amps_arr / np.sqrt(np.sum(amps_arr**2) / 2.0)  # unit RMS for the sum of tones
    bearing_res = rng.uniform(2000.0, 5000.0)
    rub_center = rng.uniform(1500.0, 5000.0)
    return MachineProfile(
        machine_type=machine_type,
        machine_id=int(machine_id),
        base_hz=float(base_hz),
        mains_hz=float(mains_hz),
        tone_mults=tuple(mults),
        tone_amps=tuple(float(a) for a in amps_arr),
        tone_groups=tuple(groups),
        blade_count=blade_count,
        noise_slope=float(noise_slope),
        noise_resonances=tuple((float(c), float(b), float(g)) for c, b, g in resonances),
        noise_to_tone_db=float(noise_to_tone_db),
        bearing_mult=float(rng.uniform(3.0, 8.0)),
        bearing_resonance_hz=float(bearing_res),
        bearing_decay_s=float(rng.uniform(0.8e-3, 2.0e-3)),
        rub_band_hz=(float(rub_center * 0.7), float(rub_center * 1.3)),
        casing_resonance_hz=float(resonances[0][0] if machine_type == "gearbox" else rng.uniform(1000.0, 3000.0)),
    )


# ==================================================================================================
# DSP helpers
# ==================================================================================================
def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _unit_rms(x: np.ndarray) -> np.ndarray:
    r = _rms(x)
    return x / r if r > 0 else x


def _shaped_noise(rng: np.random.Generator, n: int, magnitude: np.ndarray) -> np.ndarray:
    """Gaussian noise of unit RMS whose magnitude spectrum follows `magnitude`.

    Built directly in the frequency domain (one inverse FFT): cheaper than filtering white noise, and any
    spectral shape (resonances, slopes) is just a multiplication.

    Args:
        n: number of samples.
        magnitude: (n // 2 + 1,) linear magnitude per rfft bin.

    Returns:
        float64 (n,), unit RMS.
    """
    k = n // 2 + 1
    spectrum = (rng.standard_normal(k) + 1j * rng.standard_normal(k)) * magnitude
    spectrum[0] = 0.0
    return _unit_rms(np.fft.irfft(spectrum, n))


def _slow_noise(rng: np.random.Generator, n: int, sample_rate_hz: int, cutoff_hz: float) -> np.ndarray:
    """Smooth random wander (unit standard deviation) containing only frequencies below cutoff_hz."""
    k = n // 2 + 1
    n_bins = min(k - 1, int(cutoff_hz * n / sample_rate_hz))
    if n_bins < 1:
        return np.zeros(n)
    spectrum = np.zeros(k, dtype=complex)
    spectrum[1 : n_bins + 1] = rng.standard_normal(n_bins) + 1j * rng.standard_normal(n_bins)
    x = np.fft.irfft(spectrum, n)
    return x / (np.std(x) or 1.0)


def _highpass_mag(freqs_hz: np.ndarray, corner_hz: float, order: int = 2) -> np.ndarray:
    f = np.maximum(freqs_hz, 1e-3)
    return 1.0 / np.sqrt(1.0 + (corner_hz / f) ** (2 * order))


def _lowpass_mag(freqs_hz: np.ndarray, corner_hz: float, order: int = 2) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + (freqs_hz / corner_hz) ** (2 * order))


def _resonance_mag(freqs_hz: np.ndarray, center_hz: float, bandwidth_hz: float) -> np.ndarray:
    """Magnitude of a single resonance (Lorentzian, 1 at center_hz, 0.707 at +-bandwidth_hz / 2)."""
    return 1.0 / np.sqrt(1.0 + ((freqs_hz - center_hz) / (0.5 * bandwidth_hz)) ** 2)


def _bandpass_mag(freqs_hz: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    return _highpass_mag(freqs_hz, low_hz, 2) * _lowpass_mag(freqs_hz, high_hz, 2)


def _phase_events(phase_rad: np.ndarray, offset_rad: float = 0.0) -> np.ndarray:
    """Sample indices where a monotonically increasing phase passes offset_rad + 2*pi*k."""
    turns = np.floor((phase_rad - offset_rad) / (2.0 * np.pi))
    return np.flatnonzero(np.diff(turns) > 0) + 1


def impulse_train(n: int, positions: np.ndarray, amplitudes: np.ndarray) -> np.ndarray:
    x = np.zeros(n)
    keep = (positions >= 0) & (positions < n)
    np.add.at(x, positions[keep].astype(np.int64), amplitudes[keep])
    return x


def ring_resonance(impulses: np.ndarray, sample_rate_hz: int, center_hz: float, decay_s: float) -> np.ndarray:
    """Each impulse excites a structural resonance: an exponentially decaying sine of peak ~1.

    The kernel is the impulse response of a two-pole resonator, exp(-t / decay_s) * sin(2 pi f t), cut
    where it has decayed by 80 dB; the convolution is done with FFTs (numpy only, fast for long clips).
    """
    n = impulses.size
    k = np.arange(min(n, int(np.ceil(decay_s * sample_rate_hz * np.log(1e4))) + 1))
    kernel = np.exp(-k / (decay_s * sample_rate_hz)) * np.sin(2.0 * np.pi * center_hz * (k + 1) / sample_rate_hz)
    size = n + k.size - 1
    return np.fft.irfft(np.fft.rfft(impulses, size) * np.fft.rfft(kernel, size), size)[:n]


def _once_per_turn_window(theta_rad: np.ndarray, at_rad: float, width_rad: float) -> np.ndarray:
    """A smooth periodic bump (von Mises) that is 1 when the rotor angle is at_rad, ~0 elsewhere."""
    kappa = 1.0 / width_rad**2
    return np.exp(kappa * (np.cos(theta_rad - at_rad) - 1.0))


# ==================================================================================================
# Machine, background and fault synthesis
# ==================================================================================================
@dataclass
class _MachineSound:
    """The fault-free machine sound of one clip and the state the faults need."""

    total: np.ndarray  # (n,) tones + broadband
    groups: dict[str, np.ndarray]  # tonal components by group name, (n,) each
    theta_rad: np.ndarray  # (n,) shaft (or mains) phase
    base_hz: float  # mean shaft (or mains) rate in this clip
    rms: float


def _render_machine(
    profile: MachineProfile, n: int, sample_rate_hz: int, op_rng: np.random.Generator, noise_rng: np.random.Generator
) -> _MachineSound:
    """Tones locked to one shaft (or mains) phase plus resonance-shaped broadband noise."""
    is_transformer = profile.machine_type == "transformer"
    drift = MAINS_DRIFT_FRACTION if is_transformer else SPEED_DRIFT_FRACTION
    wander = MAINS_WANDER_FRACTION if is_transformer else SPEED_WANDER_FRACTION
    jitter = HUM_JITTER_FRACTION if is_transformer else TONE_JITTER_FRACTION

    # Operating point: speed differs from clip to clip and wanders slowly inside a clip. All tones share
    # one phase so harmonics, blade-pass and gear-mesh stay locked to the shaft as they do physically.
    speed = 1.0 + op_rng.uniform(-drift, drift)
    inst_hz = profile.base_hz * speed * (1.0 + wander * _slow_noise(op_rng, n, sample_rate_hz, SPEED_WANDER_CUTOFF_HZ))
    theta = 2.0 * np.pi * np.cumsum(inst_hz) / sample_rate_hz + op_rng.uniform(0.0, 2.0 * np.pi)
    n_tones = len(profile.tone_amps)
    amps = np.asarray(profile.tone_amps) * np.clip(1.0 + jitter * op_rng.standard_normal(n_tones), 0.2, None)
    phases = op_rng.uniform(0.0, 2.0 * np.pi, n_tones)
    load = op_rng.uniform(*LOAD_RANGE)

    max_hz = MAX_FREQ_FRACTION * sample_rate_hz
    top_hz = profile.base_hz * speed * (1.0 + 5.0 * wander)
    groups: dict[str, np.ndarray] = {}
    for mult, amp, phase, group in zip(profile.tone_mults, amps, phases, profile.tone_groups):
        if group not in groups:
            groups[group] = np.zeros(n)
        if mult * top_hz < max_hz:
            groups[group] += amp * np.sin(mult * theta + phase)
    tones = np.sum(list(groups.values()), axis=0)

    # Broadband: flow / air / winding noise; its level follows the load.
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate_hz)
    magnitude = (np.maximum(freqs, 20.0) / 1000.0) ** -profile.noise_slope
    shape = 1.0 + sum(g * _resonance_mag(freqs, c, b) for c, b, g in profile.noise_resonances)
    magnitude *= shape * _lowpass_mag(freqs, NOISE_ROLLOFF_HZ) * _highpass_mag(freqs, INFRASONIC_CORNER_HZ)
    noise = _shaped_noise(noise_rng, n, magnitude) * 10.0 ** (profile.noise_to_tone_db / 20.0) * load

    total = tones + noise
    return _MachineSound(total=total, groups=groups, theta_rad=theta, base_hz=profile.base_hz * speed, rms=_rms(total))


def _render_background(n: int, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """Plant background of unit RMS: broadband, low rumble and sometimes a distant machine tone."""
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate_hz)
    slope = rng.uniform(*BG_SLOPE_RANGE)
    broadband = (np.maximum(freqs, 20.0) / 1000.0) ** -slope * _lowpass_mag(freqs, NOISE_ROLLOFF_HZ)
    rumble = _lowpass_mag(freqs, rng.uniform(*BG_RUMBLE_CORNER_HZ_RANGE))
    rumble_gain = 10.0 ** (rng.uniform(*BG_RUMBLE_GAIN_DB_RANGE) / 20.0)
    magnitude = broadband / _rms(broadband) + rumble_gain * rumble / _rms(rumble)
    magnitude *= _highpass_mag(freqs, INFRASONIC_CORNER_HZ)
    background = _shaped_noise(rng, n, magnitude)

    if rng.random() < BG_TONE_PROBABILITY:
        # Another machine somewhere in the hall: a tone with two harmonics that comes and goes.
        t = np.arange(n) / sample_rate_hz
        seconds = n / sample_rate_hz
        f0_hz = rng.uniform(*BG_TONE_HZ_RANGE)
        tone = np.zeros(n)
        for k, amp in ((1, 1.0), (2, 0.5), (3, 0.25)):
            if k * f0_hz < MAX_FREQ_FRACTION * sample_rate_hz:
                tone += amp * np.sin(2.0 * np.pi * k * f0_hz * t + rng.uniform(0, 2 * np.pi))
        on_s = rng.uniform(-0.3, 0.7) * seconds
        off_s = on_s + rng.uniform(0.3, 1.0) * seconds
        fade_s = 0.5
        envelope = np.clip((t - on_s) / fade_s, 0, 1) * np.clip((off_s - t) / fade_s, 0, 1)
        background = background + _unit_rms(tone) * envelope * 10.0 ** (rng.uniform(*BG_TONE_LEVEL_DB_RANGE) / 20.0)
    return _unit_rms(background)


@dataclass
class _FaultInput:
    """What a fault renderer needs: the machine it breaks, its random stream and the strength in (0, 1]."""

    profile: MachineProfile
    machine: _MachineSound
    n: int
    sample_rate_hz: int
    rng: np.random.Generator
    strength: float

    @property
    def level(self) -> float:
        """Fault RMS at this strength, in machine units (the machine has RMS `machine.rms`)."""
        return self.strength * self.machine.rms

    def clamp_hz(self, f_hz: float) -> float:
        """A resonance frequency kept below 0.4 x sample rate (low sample rates)."""
        return min(f_hz, 0.4 * self.sample_rate_hz)


def _fault_bearing(f: _FaultInput) -> np.ndarray:
    """Outer-race defect: each rolling element hitting the spall is an impact that rings the housing."""
    theta = f.machine.theta_rad
    # Impacts happen at bearing_mult x shaft rate (a non-integer multiple, like a BPFO), locked to the shaft.
    events = _phase_events(f.profile.bearing_mult * theta)
    defect_hz = f.profile.bearing_mult * f.machine.base_hz
    # Rolling elements slip, so the interval jitters by a percent or two.
    jitter = f.rng.normal(0.0, BEARING_JITTER_FRACTION / defect_hz * f.sample_rate_hz, events.size)
    positions = np.round(events + jitter)
    # The load zone: impacts are hardest where the shaft load presses the race (once per revolution).
    load_zone = 1.0 + BEARING_LOAD_ZONE_DEPTH * np.cos(theta[events] - f.rng.uniform(0, 2 * np.pi))
    amplitudes = load_zone * f.rng.lognormal(0.0, 0.25, events.size)
    impulses = impulse_train(f.n, positions, amplitudes)
    resonance_hz = f.clamp_hz(f.profile.bearing_resonance_hz)
    ringing = ring_resonance(impulses, f.sample_rate_hz, resonance_hz, f.profile.bearing_decay_s)
    return _unit_rms(ringing) * f.level * 10.0 ** (FAULT_LEVEL_DB["bearing"] / 20.0)


def _fault_rubbing(f: _FaultInput) -> np.ndarray:
    """Rotor touching the stator/seal: random clicks (few ms) and scrapes (tens of ms) of band-passed noise."""
    sr = f.sample_rate_hz
    rate_hz = f.rng.uniform(*RUB_RATE_HZ_RANGE)
    count = max(1, int(f.rng.poisson(rate_hz * f.n / sr)))  # at least one contact per clip
    envelope = np.zeros(f.n)
    starts, is_clicks, amps = f.rng.integers(0, f.n, count), f.rng.random(count) < 0.6, f.rng.lognormal(0.0, 0.4, count)
    for start, is_click, amp in zip(starts, is_clicks, amps):
        if is_click:
            length = int(f.rng.uniform(3e-3, 10e-3) * sr)
            k = np.arange(length)
            shape = np.minimum(1.0, k / max(1.0, 0.5e-3 * sr)) * np.exp(-k / (0.3 * length))
        else:
            length = int(f.rng.uniform(20e-3, 80e-3) * sr)
            shape = np.hanning(length + 2)[1:-1]
        stop = min(f.n, start + length)
        envelope[start:stop] += amp * shape[: stop - start]
    low_hz, high_hz = f.profile.rub_band_hz
    freqs = np.fft.rfftfreq(f.n, 1.0 / sr)
    band_noise = _shaped_noise(f.rng, f.n, _bandpass_mag(freqs, low_hz, f.clamp_hz(high_hz)))
    return envelope * band_noise * f.level * 10.0 ** (FAULT_LEVEL_DB["rubbing"] / 20.0)


def _fault_imbalance(f: _FaultInput) -> np.ndarray:
    """Mass imbalance: a strong 1x shaft tone, and the whole machine sound modulated at the shaft rate.

    The centrifugal force of the unbalanced mass turns once per revolution: 1x dominates. The larger
    vibration drives the non-linear supports, adding weaker 2x and 3x (which also lifts the fault above
    the ~50 Hz lower edge of the device's mel bands for slow machines).
    """
    theta = f.machine.theta_rad
    tone = np.zeros(f.n)
    for harmonic, gain_db in IMBALANCE_HARMONICS_DB:
        tone += 10.0 ** (gain_db / 20.0) * np.sin(harmonic * theta + f.rng.uniform(0, 2 * np.pi))
    tone = _unit_rms(tone)
    modulation = IMBALANCE_AM_DEPTH * f.strength * np.cos(theta + f.rng.uniform(0, 2 * np.pi)) * f.machine.total
    return tone * f.level * 10.0 ** (FAULT_LEVEL_DB["imbalance"] / 20.0) + modulation


def _fault_cavitation(f: _FaultInput) -> np.ndarray:
    """Pump cavitation: vapour bubbles collapse as dense broadband crackle, in bursts.

    Bubbles collapse where pressure recovers, which pulsates at the vane-pass rate, so the crackle is
    modulated by it. Each collapse is a very short pressure spike (broadband, mostly above ~1.5 kHz).
    """
    sr = f.sample_rate_hz
    t = np.arange(f.n) / sr
    envelope = np.full(f.n, 0.25)  # some steady crackle between the bursts
    count = f.rng.poisson(3.0 * f.n / sr)
    starts_s = f.rng.uniform(0, f.n / sr, count)
    lengths_s, amps = f.rng.uniform(0.05, 0.3, count), f.rng.uniform(0.5, 1.0, count)
    for start_s, length_s, amp in zip(starts_s, lengths_s, amps):
        inside = (t >= start_s) & (t < start_s + length_s)
        envelope[inside] += amp * np.sin(np.pi * (t[inside] - start_s) / length_s)
    vanes = max(1, f.profile.blade_count)
    envelope *= 1.0 + 0.5 * np.cos(vanes * f.machine.theta_rad)
    positions = np.flatnonzero(f.rng.random(f.n) < CAVITATION_PULSE_RATE_HZ / sr)
    spikes = impulse_train(f.n, positions, np.minimum(f.rng.lognormal(0.0, 0.6, positions.size), 4.0)) * envelope
    freqs = np.fft.rfftfreq(f.n, 1.0 / sr)
    response = _highpass_mag(freqs, CAVITATION_HIGHPASS_HZ) * _lowpass_mag(freqs, NOISE_ROLLOFF_HZ)
    shaped = np.fft.irfft(np.fft.rfft(spikes) * response, f.n)
    return _unit_rms(shaped) * f.level * 10.0 ** (FAULT_LEVEL_DB["cavitation"] / 20.0)


def _fault_blade(f: _FaultInput) -> np.ndarray:
    """Damaged fan blade: its pressure pulse is missing once per turn, plus an aerodynamic thump and turbulence.

    Removing one of B pulses per revolution turns the pure blade-pass series into a shaft-rate harmonic
    series (sidebands at +-k x shaft around every blade-pass harmonic).
    """
    theta = f.machine.theta_rad
    blades = max(1, f.profile.blade_count)
    at_rad = f.rng.uniform(0, 2 * np.pi)
    window = _once_per_turn_window(theta, at_rad, np.pi / blades)
    missing = -BLADE_MISSING_DEPTH * f.strength * window * f.machine.groups.get("blade", np.zeros(f.n))
    freqs = np.fft.rfftfreq(f.n, 1.0 / f.sample_rate_hz)
    band_noise = _shaped_noise(f.rng, f.n, _bandpass_mag(freqs, 200.0, 3000.0))
    turbulence = _once_per_turn_window(theta, at_rad, 2 * np.pi / blades) * band_noise
    thump = _unit_rms(window - window.mean()) + _unit_rms(turbulence)
    return missing + _unit_rms(thump) * f.level * 10.0 ** (FAULT_LEVEL_DB["blade"] / 20.0)


def _fault_corona(f: _FaultInput) -> np.ndarray:
    """Corona/partial discharge: crackle at the voltage peaks (2 x mains) plus slightly stronger hum harmonics.

    Discharges start when the field at a sharp edge exceeds inception, i.e. near both voltage peaks of each
    cycle; the two polarities discharge differently, and many half-cycles have no discharge at all.
    """
    theta = f.machine.theta_rad  # mains phase; the voltage ~ sin(theta) peaks at pi/2 + k*pi
    events = _phase_events(2.0 * theta, offset_rad=np.pi)
    fire_probability = f.rng.uniform(0.5, 0.85)
    polarity_gain = np.where(np.cos(theta[events] - np.pi / 2) > 0, 1.0, f.rng.uniform(0.4, 0.8))
    fires = f.rng.random(events.size) < fire_probability
    counts = np.where(fires, 1 + f.rng.poisson(0.7, events.size), 0)
    base = np.repeat(events, counts)
    amplitudes = np.repeat(polarity_gain, counts) * f.rng.lognormal(0.0, 0.5, base.size)
    positions = np.round(base + f.rng.normal(0.0, CORONA_JITTER_S * f.sample_rate_hz, base.size))
    spikes = impulse_train(f.n, positions, amplitudes)
    freqs = np.fft.rfftfreq(f.n, 1.0 / f.sample_rate_hz)
    # Each discharge: a decaying noise burst (a fraction of a millisecond), then high-passed: crackle/hiss.
    k = np.arange(int(5 * CORONA_PULSE_DECAY_S * f.sample_rate_hz) + 1)
    pulse = f.rng.standard_normal(k.size) * np.exp(-k / (CORONA_PULSE_DECAY_S * f.sample_rate_hz))
    pulse_spectrum = np.fft.rfft(pulse / np.sqrt(np.sum(pulse**2)), f.n)
    response = pulse_spectrum * _highpass_mag(freqs, CORONA_HIGHPASS_HZ) * _lowpass_mag(freqs, NOISE_ROLLOFF_HZ)
    crackle = np.fft.irfft(np.fft.rfft(spikes) * response, f.n)
    hum_increase = CORONA_HUM_INCREASE * f.strength * f.machine.groups.get("hum_high", np.zeros(f.n))
    return _unit_rms(crackle) * f.level * 10.0 ** (FAULT_LEVEL_DB["corona"] / 20.0) + hum_increase


def _fault_gear_tooth(f: _FaultInput) -> np.ndarray:
    """Chipped gear tooth: once per revolution an impact rings the casing and the mesh tone dips."""
    theta = f.machine.theta_rad
    at_rad = f.rng.uniform(0, 2 * np.pi)
    events = _phase_events(theta, offset_rad=at_rad)
    impacts = impulse_train(f.n, events.astype(float), f.rng.lognormal(0.0, 0.15, events.size))
    ringing = ring_resonance(impacts, f.sample_rate_hz, f.clamp_hz(f.profile.casing_resonance_hz), GEAR_TOOTH_DECAY_S)
    teeth = max(1, f.profile.blade_count)
    window = _once_per_turn_window(theta, at_rad, 2 * np.pi / teeth)
    dip = -GEAR_TOOTH_MESH_DIP * f.strength * window * f.machine.groups.get("mesh", np.zeros(f.n))
    return _unit_rms(ringing) * f.level * 10.0 ** (FAULT_LEVEL_DB["gear_tooth"] / 20.0) + dip


_FAULT_RENDERERS: dict[str, Callable[[_FaultInput], np.ndarray]] = {
    "bearing": _fault_bearing,
    "rubbing": _fault_rubbing,
    "imbalance": _fault_imbalance,
    "cavitation": _fault_cavitation,
    "blade": _fault_blade,
    "corona": _fault_corona,
    "gear_tooth": _fault_gear_tooth,
}


# ==================================================================================================
# Public API
# ==================================================================================================
def render_clip(
    machine_type: str,
    machine_id: int,
    seconds: float = 10.0,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    fault: str | None = None,
    fault_strength: float = 1.0,
    snr_db: float = 6.0,
    seed: int = 0,
    gain_jitter_db: float | None = None,
) -> np.ndarray:
    """One synthetic clip of a machine, with or without a fault, in plant background noise.

    The clip is machine + background (+ fault). Operating point, background, level and fault each draw from
    their own random stream spawned from `seed`, so the same seed with and without a fault (or with another
    strength) gives the same machine and background: only the fault component differs (unless the clip
    had to be scaled down to stay below PEAK_LIMIT).

    Args:
        machine_type: one of MACHINE_TYPES.
        machine_id: machine id (>= 0); the machine's character is derived from (type, id).
        seconds: clip length in s.
        sample_rate_hz: sample rate in Hz (>= 8000).
        fault: None (or "", as in the manifest) for a normal clip, else one of FAULTS_BY_TYPE[machine_type].
        fault_strength: in (0, 1]; scales the fault amplitude linearly (0.1 is faint, 1.0 clear).
        snr_db: machine RMS re background RMS in dB (fault not counted).
        seed: non-negative int; the clip's own seed.
        gain_jitter_db: None: every clip is set to its own random level between -35 and -15 dBFS
            (as if the recorder's gain were set anew for each clip: the absolute level carries no
            information). A number: a fixed microphone and gain per machine, as on a mounted sensor:
            the machine's own level (which follows its load) reaches the file through a gain fixed
            per (type, id), varied per clip by this many dB (standard deviation).

    Returns:
        float32 (n,) with n = round(seconds * sample_rate_hz); RMS of the fault-free mix is between
        -35 and -15 dBFS (about, with gain_jitter_db); peak < 1.0.

    Raises:
        AcmonError: an argument is out of range or unknown.
    """
    _check_machine_type(machine_type)
    fault = fault or None
    if fault is not None and fault not in FAULTS_BY_TYPE[machine_type]:
        allowed = ", ".join(FAULTS_BY_TYPE[machine_type])
        raise AcmonError(f"fault: {fault!r} is not a {machine_type} fault; allowed: {allowed}")
    if fault is not None and not 0.0 < fault_strength <= 1.0:
        raise AcmonError(f"fault_strength: must be in (0, 1], got {fault_strength}")
    if not seconds > 0:
        raise AcmonError(f"seconds: must be > 0, got {seconds}")
    if int(sample_rate_hz) < MIN_SAMPLE_RATE_HZ:
        raise AcmonError(f"sample_rate_hz: must be >= {MIN_SAMPLE_RATE_HZ}, got {sample_rate_hz}")
    if not np.isfinite(snr_db):
        raise AcmonError(f"snr_db: must be a finite number in dB, got {snr_db}")
    if int(seed) < 0:
        raise AcmonError(f"seed: must be >= 0, got {seed}")
    sample_rate_hz = int(sample_rate_hz)
    n = max(1, int(round(seconds * sample_rate_hz)))
    profile = machine_profile(machine_type, machine_id)
    streams = np.random.SeedSequence(int(seed)).spawn(5)
    op_rng, noise_rng, bg_rng, level_rng, fault_rng = (np.random.default_rng(s) for s in streams)

    machine = _render_machine(profile, n, sample_rate_hz, op_rng, noise_rng)
    background = _render_background(n, sample_rate_hz, bg_rng) * machine.rms * 10.0 ** (-snr_db / 20.0)
    mix = machine.total + background
    if gain_jitter_db is None:
        target_rms = 10.0 ** (level_rng.uniform(*CLIP_RMS_DBFS_RANGE) / 20.0)
        gain = target_rms / max(_rms(mix), 1e-12)
    else:
        # The machine at nominal load has RMS about 1.2 (unit tones plus its broadband); the sensor's
        # gain puts that at a level fixed per machine, whatever this clip's load and background.
        machine_rng = np.random.default_rng([PROFILE_SALT, _type_code(machine_type), int(machine_id), 1])
        level_dbfs = machine_rng.uniform(*CLIP_RMS_DBFS_RANGE) + level_rng.normal(0.0, gain_jitter_db)
        gain = 10.0 ** (level_dbfs / 20.0) / 1.2
    if fault is not None:
        fault_input = _FaultInput(profile, machine, n, sample_rate_hz, fault_rng, float(fault_strength))
        mix = mix + _FAULT_RENDERERS[fault](fault_input)
    clip = mix * gain
    peak = float(np.max(np.abs(clip)))
    if peak > PEAK_LIMIT:
        logger.debug("%s id %d seed %d: peak %.3f scaled to %.2f", machine_type, machine_id, seed, peak, PEAK_LIMIT)
        clip *= PEAK_LIMIT / peak
    return clip.astype(np.float32)


def clip_seed(seed: int, machine_type: str, machine_id: int, split: str, label: str, index: int) -> int:
    """The per-clip seed of one dataset file, so any clip can be regenerated alone with render_clip."""
    return int(_clip_seed_sequence(seed, machine_type, machine_id, split, label, index).generate_state(1)[0])


def _clip_seed_sequence(
    seed: int, machine_type: str, machine_id: int, split: str, label: str, index: int
) -> np.random.SeedSequence:
    entropy = [int(seed), _type_code(machine_type), int(machine_id), SPLIT_CODES[split], LABEL_CODES[label], int(index)]
    return np.random.SeedSequence(entropy)


def _check_range(
    name: str, value: Sequence[float], low: float | None, high: float | None, low_open: bool = False
) -> tuple[float, float]:
    """(lo, hi) as floats with lo <= hi inside [low, high] (low excluded if low_open); else AcmonError naming `name`."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise AcmonError(f"{name}: expected two numbers LO,HI, got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise AcmonError(f"{name}: expected LO <= HI, got {lo:g},{hi:g}")
    if low is not None and (lo <= low if low_open else lo < low):
        raise AcmonError(f"{name}: values must be {'>' if low_open else '>='} {low:g}, got {lo:g},{hi:g}")
    if high is not None and hi > high:
        raise AcmonError(f"{name}: values must be <= {high:g}, got {lo:g},{hi:g}")
    return lo, hi


def make_dataset(
    out_dir: str | Path,
    machine_types: Sequence[str] = ("pump",),
    machine_ids: Sequence[int] = (0,),
    n_train: int = 20,
    n_test_normal: int = 5,
    n_test_anomaly: int = 5,
    seconds: float = 10.0,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    snr_db_range: tuple[float, float] = (3.0, 9.0),
    fault_strength_range: tuple[float, float] = (0.5, 1.0),
    seed: int = 0,
    progress: bool = True,
    gain_jitter_db: float | None = None,
) -> Path:
    """Write a synthetic dataset in the DCASE 2020 Task 2 layout plus OUT/manifest.csv.

    Layout: OUT/<type>/train/normal_id_XX_NNNNNNNN.wav and OUT/<type>/test/{normal,anomaly}_id_XX_NNNNNNNN.wav,
    16-bit mono PCM. NNNNNNNN counts per (type, split, label, id). Anomaly clips cycle through
    FAULTS_BY_TYPE[type]. Each clip's snr_db and fault_strength are drawn uniformly from the ranges and
    rounded (2 and 3 decimals); the manifest's (machine_type, machine_id, fault, fault_strength, snr_db,
    seed) passed to render_clip (with `seconds`, `sample_rate_hz`) reproduce a clip exactly.
    Normal clips have an empty fault and fault_strength 0.

    Args:
        out_dir: output folder, created if missing; existing files with the same names are overwritten.
        machine_types: names from MACHINE_TYPES.
        machine_ids: ids 0-99.
        n_train, n_test_normal, n_test_anomaly: clips per (type, id).
        seconds: clip length in s.
        sample_rate_hz: sample rate in Hz.
        snr_db_range: (low_db, high_db) machine-to-background ratio.
        fault_strength_range: (low, high) within (0, 1].
        seed: dataset seed (>= 0).
        progress: show a tqdm progress bar on stderr.
        gain_jitter_db: see render_clip (None: each clip at its own random level; a number: a fixed
            gain per machine with this jitter in dB; the manifest does not record it).

    Returns:
        out_dir as a Path.

    Raises:
        AcmonError: an argument is out of range or unknown.
    """
    machine_types = [machine_types] if isinstance(machine_types, str) else list(machine_types)
    if not machine_types:
        raise AcmonError(f"machine_types: give at least one of {', '.join(MACHINE_TYPES)}")
    for machine_type in machine_types:
        _check_machine_type(machine_type, "machine_types")
    machine_ids = [int(i) for i in machine_ids]
    if not machine_ids or any(not 0 <= i <= MAX_MACHINE_ID for i in machine_ids):
        raise AcmonError(f"machine_ids: give ids between 0 and {MAX_MACHINE_ID}, got {machine_ids}")
    for name, count in (("n_train", n_train), ("n_test_normal", n_test_normal), ("n_test_anomaly", n_test_anomaly)):
        if int(count) < 0:
            raise AcmonError(f"{name}: must be >= 0, got {count}")
    if not seconds > 0:
        raise AcmonError(f"seconds: must be > 0, got {seconds}")
    if int(seed) < 0:
        raise AcmonError(f"seed: must be >= 0, got {seed}")
    snr_lo, snr_hi = _check_range("snr_db_range", snr_db_range, None, None)
    strength_lo, strength_hi = _check_range("fault_strength_range", fault_strength_range, 0.0, 1.0, low_open=True)

    out = Path(out_dir)
    jobs = []  # (type, id, split, label, index)
    for machine_type in machine_types:
        for machine_id in machine_ids:
            jobs += [(machine_type, machine_id, "train", "normal", i) for i in range(int(n_train))]
            jobs += [(machine_type, machine_id, "test", "normal", i) for i in range(int(n_test_normal))]
            jobs += [(machine_type, machine_id, "test", "anomaly", i) for i in range(int(n_test_anomaly))]
    for machine_type in machine_types:
        for split in ("train", "test"):
            (out / machine_type / split).mkdir(parents=True, exist_ok=True)

    rows = []
    for machine_type, machine_id, split, label, index in tqdm(jobs, desc="synth", unit="clip", disable=not progress):
        sequence = _clip_seed_sequence(seed, machine_type, machine_id, split, label, index)
        clip = int(sequence.generate_state(1)[0])  # the clip's own seed
        meta_rng = np.random.default_rng(sequence)
        snr_db = round(float(meta_rng.uniform(snr_lo, snr_hi)), SNR_DECIMALS)
        fault, strength = None, 0.0
        if label == "anomaly":
            faults = FAULTS_BY_TYPE[machine_type]
            fault = faults[index % len(faults)]
            strength = round(float(meta_rng.uniform(strength_lo, strength_hi)), STRENGTH_DECIMALS)
            strength = min(max(strength, 10.0**-STRENGTH_DECIMALS), 1.0)
        samples = render_clip(
            machine_type,
            machine_id,
            seconds,
            sample_rate_hz,
            fault,
            strength if fault else 1.0,
            snr_db,
            clip,
            gain_jitter_db,
        )
        relative = Path(machine_type) / split / f"{label}_id_{machine_id:02d}_{index:08d}.wav"
        write_wav(out / relative, samples, sample_rate_hz, sample_format="int16")
        strength_text, snr_text = f"{strength:.{STRENGTH_DECIMALS}f}", f"{snr_db:.{SNR_DECIMALS}f}"
        rows.append(
            (relative.as_posix(), machine_type, machine_id, split, label, fault or "", strength_text, snr_text, clip)
        )

    with open(out / MANIFEST_NAME, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)
    written = {row[0] for row in rows}
    on_disk = [path for machine_type in machine_types for path in (out / machine_type).glob("*/*.wav")]
    stale = [path for path in on_disk if path.relative_to(out).as_posix() not in written]
    if stale:
        logger.warning("%s: %d older .wav file(s) not in %s remain (e.g. %s)", out, len(stale), MANIFEST_NAME, stale[0])
    logger.info("wrote %d clips and %s to %s", len(rows), MANIFEST_NAME, out)
    return out


def make_demo_dataset(out_dir: str | Path, seed: int = 0, progress: bool = False) -> Path:
    """A small pump dataset for the 2-minute demo: 24 train, 4 + 4 test clips of 6 s, clear faults.

    Anomalies are one each of bearing, rubbing, imbalance and cavitation, strength 0.8-1.0, SNR 6-12 dB.
    Takes about a second.

    Returns:
        out_dir as a Path.
    """
    return make_dataset(
        out_dir,
        machine_types=(DEMO_MACHINE_TYPE,),
        machine_ids=(DEMO_MACHINE_ID,),
        n_train=DEMO_N_TRAIN,
        n_test_normal=DEMO_N_TEST_NORMAL,
        n_test_anomaly=DEMO_N_TEST_ANOMALY,
        seconds=DEMO_SECONDS,
        snr_db_range=DEMO_SNR_DB_RANGE,
        fault_strength_range=DEMO_FAULT_STRENGTH_RANGE,
        seed=seed,
        progress=progress,
    )


# ==================================================================================================
# Command line: python -m training synth ...
# ==================================================================================================
def register(subparsers) -> argparse.ArgumentParser:
    """Add the `synth` subcommand to an argparse subparsers object; it runs run_synth(args)."""
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic machine-sound dataset (DCASE 2020 Task 2 layout + manifest.csv)",
        description=(
            "Write synthetic machine sounds (pump, fan, gearbox, transformer) with labelled faults in the "
            "DCASE 2020 Task 2 layout: OUT/<type>/train/normal_id_XX_NNNNNNNN.wav, "
            "OUT/<type>/test/{normal,anomaly}_id_XX_NNNNNNNN.wav (16 kHz mono 16-bit) and OUT/manifest.csv. "
            "Deterministic for a given --seed. Negative values need '=': --snr-db=-3,9."
        ),
    )
    add = parser.add_argument
    add("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    add(
        "--demo",
        action="store_true",
        help=f"write the small demo dataset instead ({DEMO_MACHINE_TYPE} id {DEMO_MACHINE_ID}, {DEMO_N_TRAIN} train + "
        f"{DEMO_N_TEST_NORMAL} normal + {DEMO_N_TEST_ANOMALY} anomalous test clips of {DEMO_SECONDS:g} s); "
        "the size, range and type options are ignored",
    )
    add(
        "--machine-types",
        default="pump",
        metavar="T1,T2",
        help=f"comma-separated machine types from {','.join(MACHINE_TYPES)} (default: %(default)s)",
    )
    add(
        "--ids",
        type=int,
        default=1,
        metavar="N",
        help=f"machines per type, ids 0..N-1, N from 1 to {MAX_MACHINE_ID + 1} (default: %(default)s)",
    )
    add("--train", type=int, default=20, metavar="N", help="normal training clips per machine (default: %(default)s)")
    add("--test-normal", type=int, default=5, metavar="N", help="normal test clips per machine (default: %(default)s)")
    add(
        "--test-anomaly",
        type=int,
        default=5,
        metavar="N",
        help="anomalous test clips per machine, cycling through the type's faults (default: %(default)s)",
    )
    add("--seconds", type=float, default=10.0, metavar="S", help="clip length in seconds (default: %(default)s)")
    add(
        "--snr-db",
        default="3,9",
        metavar="LO,HI",
        help="machine-to-background ratio range in dB, drawn uniformly per clip; write negative values as "
        "--snr-db=-3,9 (default: %(default)s)",
    )
    add(
        "--fault-strength",
        default="0.5,1.0",
        metavar="LO,HI",
        help="fault strength range within (0, 1]: 0.1 faint, 1.0 clear (default: %(default)s)",
    )
    add("--seed", type=int, default=0, metavar="N", help="dataset seed, >= 0 (default: %(default)s)")
    add("--no-progress", action="store_true", help="do not show the progress bar on stderr")
    parser.set_defaults(func=run_synth)
    return parser


def _parse_pair(text: str, argument: str) -> tuple[float, float]:
    parts = str(text).split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise AcmonError(f"{argument}: expected two numbers LO,HI (e.g. 3,9), got {text!r}") from None


def run_synth(args: argparse.Namespace) -> int:
    """Run the `synth` subcommand; prints one summary line and returns 0.

    Raises:
        AcmonError: a bad argument (named in the message, with the allowed values).
    """
    progress = not args.no_progress
    if args.demo:
        out = make_demo_dataset(args.out, seed=args.seed, progress=progress)
        seconds = DEMO_SECONDS
    else:
        machine_types = [t.strip() for t in str(args.machine_types).split(",") if t.strip()]
        if not machine_types:
            raise AcmonError(f"--machine-types: give at least one of {','.join(MACHINE_TYPES)}")
        for machine_type in machine_types:
            _check_machine_type(machine_type, "--machine-types")
        if not 1 <= args.ids <= MAX_MACHINE_ID + 1:
            raise AcmonError(f"--ids: number of machines must be 1-{MAX_MACHINE_ID + 1}, got {args.ids}")
        counts = (("--train", args.train), ("--test-normal", args.test_normal), ("--test-anomaly", args.test_anomaly))
        for flag, value in counts:
            if value < 0:
                raise AcmonError(f"{flag}: must be >= 0, got {value}")
        if not args.seconds > 0:
            raise AcmonError(f"--seconds: must be > 0, got {args.seconds:g}")
        if args.seed < 0:
            raise AcmonError(f"--seed: must be >= 0, got {args.seed}")
        snr_db_range = _check_range("--snr-db", _parse_pair(args.snr_db, "--snr-db"), None, None)
        strength_pair = _parse_pair(args.fault_strength, "--fault-strength")
        strength_range = _check_range("--fault-strength", strength_pair, 0.0, 1.0, low_open=True)
        seconds = float(args.seconds)
        out = make_dataset(
            args.out,
            machine_types=machine_types,
            machine_ids=range(args.ids),
            n_train=args.train,
            n_test_normal=args.test_normal,
            n_test_anomaly=args.test_anomaly,
            seconds=seconds,
            snr_db_range=snr_db_range,
            fault_strength_range=strength_range,
            seed=args.seed,
            progress=progress,
        )
    with open(out / MANIFEST_NAME, encoding="utf-8") as fh:
        n_clips = sum(1 for _ in fh) - 1
    minutes = n_clips * seconds / 60.0
    print(f"synth: wrote {n_clips} clips ({minutes:.1f} min of audio, 16-bit WAV) and {MANIFEST_NAME} to {out}")
    return 0
