"""Speech and shuffle labels (SPEC 3): the class name spoken by a TTS program, as a 64x64 mel image in dB.

librosa (0.7.1 in the original) is not a dependency: it pulls numba/llvmlite and audio back-ends for the
four functions used here. trim, STFT, the Slaney mel filterbank and power_to_db are re-implemented below
with numpy/scipy following librosa 0.7.1's defaults (hann window, n_fft 2048, reflect padding, norm=1).
The original spoke the names with another TTS voice, so the images differ from the committed files.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from math import gcd
from pathlib import Path
from typing import Sequence

import numpy as np

from advpipe.labels.generators import SIDE, LabelError

SR = 22050
N_FFT = 2048
HOP = 256
N_MELS = 64
FMAX = 8000.0
TOP_DB = 80.0
# The names the original spoke for CIFAR-10 (SPEC 3: capitalised, "Car" for automobile), by CIFAR-10's own
# class names (torchvision's meta file, in class order).
CIFAR10_SPEECH_NAMES = ["Airplane", "Car", "Bird", "Cat", "Deer", "Dog", "Frog", "Horse", "Ship", "Truck"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_CIFAR10_SPOKEN = dict(zip(CIFAR10_CLASSES, CIFAR10_SPEECH_NAMES))


def spoken_names(class_names: Sequence[str]) -> list[str]:
    """The words spoken for `class_names`: SPEC 3's names when the classes are CIFAR-10's ten (in any case or
    order, e.g. torchvision's "automobile" -> "Car"); any other dataset's names unchanged."""
    names = [str(n) for n in class_names]
    lowered = [n.strip().lower() for n in names]
    if sorted(lowered) == sorted(CIFAR10_CLASSES):
        return [_CIFAR10_SPOKEN[n] for n in lowered]
    return names


def espeak_path() -> str | None:
    return shutil.which("espeak-ng")


def synthesize(text: str, voice: str | None = None) -> tuple[np.ndarray, int]:
    """(mono float waveform in [-1, 1], sample rate) of `text` spoken by espeak-ng."""
    exe = espeak_path()
    if exe is None:
        raise LabelError("speech labels need the espeak-ng text-to-speech program, which is not installed "
                         "(Debian/Ubuntu: apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        cmd = [exe, "-w", str(wav)] + (["-v", voice] if voice else []) + ["--", text]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not wav.is_file():
            raise LabelError(f"espeak-ng failed on {text!r}: {done.stderr.strip() or done.returncode}")
        return read_wav(wav)


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(mono float waveform, rate); integer PCM scaled to [-1, 1] as librosa.load does."""
    from scipy.io import wavfile  # scipy's submodules cost ~1 s to import: only speech labels need them

    rate, data = wavfile.read(path)
    if data.dtype.kind == "u":
        x = (data.astype(np.float64) - 128.0) / 128.0
    elif data.dtype.kind == "i":
        x = data.astype(np.float64) / float(2 ** (8 * data.dtype.itemsize - 1))
    else:
        x = data.astype(np.float64)
    return (x.mean(axis=1) if x.ndim == 2 else x), int(rate)


def _frames(y: np.ndarray, frame_length: int, hop: int) -> np.ndarray:
    """(frame_length, n_frames) view of a padded signal, librosa.util.frame's layout."""
    n = 1 + (len(y) - frame_length) // hop
    idx = np.arange(frame_length)[:, None] + hop * np.arange(n)[None, :]
    return y[idx]


def trim(y: np.ndarray, top_db: float = 60.0, frame_length: int = 2048, hop: int = 512) -> np.ndarray:
    """librosa.effects.trim: keep from the first to the last frame whose RMS power is within top_db of the max."""
    padded = np.pad(y, frame_length // 2, mode="reflect")
    mse = np.mean(np.abs(_frames(padded, frame_length, hop)) ** 2, axis=0)
    db = power_to_db(mse, top_db=None)
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return y[:0]
    return y[loud[0] * hop: min(len(y), (loud[-1] + 1) * hop)]


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa htk=False): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep,
                    f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sr: int = SR, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = 0.0,
                   fmax: float = FMAX) -> np.ndarray:
    """librosa.filters.mel(htk=False, norm=1): triangles on the Slaney scale, area-normalised."""
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]


def power_to_db(s: np.ndarray, amin: float = 1e-10, top_db: float | None = TOP_DB) -> np.ndarray:
    """librosa.power_to_db(ref=np.max): dB relative to the maximum, floored at -top_db."""
    log_spec = 10.0 * np.log10(np.maximum(amin, s)) - 10.0 * np.log10(max(amin, float(np.max(s))))
    return log_spec if top_db is None else np.maximum(log_spec, log_spec.max() - top_db)


def mel_db(y: np.ndarray, sr: int = SR) -> np.ndarray:
    """(n_mels, frames) mel power spectrogram in dB re max: centred reflect-padded STFT, periodic hann."""
    if len(y) == 0:
        raise LabelError("speech labels: the audio is silent after trimming")
    padded = np.pad(y, N_FFT // 2, mode="reflect" if len(y) > N_FFT // 2 else "constant")
    from scipy.signal import get_window

    frames = _frames(padded, N_FFT, HOP) * get_window("hann", N_FFT, fftbins=True)[:, None]
    power = np.abs(np.fft.rfft(frames, axis=0)) ** 2
    return power_to_db(mel_filterbank(sr) @ power)


def resize_bilinear(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with half-pixel centres (cv2/skimage order 1); stays within the input's range.
    The original's resize routine is not recorded, so this is a choice, not a copy."""
    out = np.asarray(img, dtype=np.float64)
    for axis, n_out in enumerate(shape):
        n_in = out.shape[axis]
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        w = (pos - lo).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, lo, axis=axis) * (1 - w) + np.take(out, hi, axis=axis) * w
    return out


def speech_image(y: np.ndarray, sr: int, side: int = SIDE) -> np.ndarray:
    """Waveform -> trimmed -> mel dB -> side x side (rows: mel bands, columns: time)."""
    if sr != SR:  # librosa.load resamples to 22050 Hz
        g = gcd(int(sr), SR)
        from scipy.signal import resample_poly

        y = resample_poly(y, SR // g, int(sr) // g)
    return resize_bilinear(mel_db(trim(y)), (side, side))


def speech_labels(class_names: Sequence[str] | None, num_classes: int, voice: str | None = None,
                  audio_dir: str | os.PathLike | None = None, side: int = SIDE) -> np.ndarray:
    """(C, side, side) float32 in [-80, 0]: each class's spoken name (`spoken_names`: SPEC 3's "Airplane",
    "Car", ... for CIFAR-10) by espeak-ng, or read from audio_dir/<spoken name>.wav (else <class name>.wav)
    when given (e.g. the original's recordings). Deterministic: no seed involved."""
    if class_names is None:
        raise LabelError("speech labels need class_names (the words spoken); for CIFAR-10 the original used "
                         f"{CIFAR10_SPEECH_NAMES}")
    if len(class_names) != num_classes:
        raise LabelError(f"speech labels: {len(class_names)} class names for {num_classes} classes")
    out = np.empty((num_classes, side, side), dtype=np.float32)
    for k, (name, word) in enumerate(zip(class_names, spoken_names(class_names))):
        if audio_dir is not None:
            paths = [Path(audio_dir) / f"{n}.wav" for n in dict.fromkeys([word, str(name)])]
            path = next((p for p in paths if p.is_file()), None)
            if path is None:
                raise LabelError(f"speech labels: no audio file {' or '.join(map(str, paths))} for class {name!r}")
            y, sr = read_wav(path)
        else:
            y, sr = synthesize(word, voice)
        out[k] = speech_image(y, sr, side)
    return out


def permute_columns(labels: np.ndarray, rng: np.random.RandomState | np.random.Generator) -> np.ndarray:
    """Shuffle labels: each class's time columns (last axis) in a new permutation, redrawn if the identity."""
    out = np.empty_like(labels)
    n = labels.shape[-1]
    if n < 2:
        raise LabelError("shuffle labels need at least 2 time columns to permute")
    for k in range(labels.shape[0]):
        perm = rng.permutation(n)
        while np.array_equal(perm, np.arange(n)):
            perm = rng.permutation(n)
        out[k] = labels[k][..., perm]
    return out
