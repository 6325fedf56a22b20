# Scores one received WAV against the WAV that was sent (both 48 kHz mono), for `fala-bench media`.
# Usage: score.py SENT.wav HEARD.wav  ->  one JSON object on stdout.
#
# 1. Global alignment: the lag (0..1.5 s) of HEARD behind SENT that maximises the FFT
#    cross-correlation of the whole clip.
# 2. Speech region: 20 ms frames of SENT within 40 dB of its loudest frame, first to last,
#    padded by 200 ms. Both signals are cut to it (HEARD shifted by the lag).
# 3. Per-segment lags: each 500 ms segment of speech is re-aligned within +-50 ms of the global
#    lag; segments whose normalised correlation peak is >= 0.5 give the mean/min/max lag (the
#    adaptive jitter buffer legitimately moves its delay during a call).
# 4. PESQ wideband (ITU-T P.862.2) on HEARD at the global lag, and STOI on HEARD re-assembled
#    from the segments at their own lags (see below), both at 16 kHz mono (resample_poly 1:3).
import json
import sys

import numpy as np
from scipy.io import wavfile
from scipy.signal import correlate, resample_poly

from pesq import pesq
from pystoi import stoi

FS = 48_000


def load(path):
    sr, x = wavfile.read(path)
    if sr != FS:
        raise SystemExit(f"{path}: {sr} Hz, expected {FS}")
    if x.dtype == np.int16:
        x = x.astype(np.float64) / 32768.0
    else:
        x = x.astype(np.float64)
    if x.ndim > 1:
        x = x.mean(axis=1)
    return x


ref = load(sys.argv[1])
deg = load(sys.argv[2])
max_lag = int(1.5 * FS)
if len(deg) < len(ref) + max_lag:
    deg = np.concatenate([deg, np.zeros(len(ref) + max_lag - len(deg))])

n = 1 << int(np.ceil(np.log2(len(ref) + len(deg))))
c = np.fft.irfft(np.fft.rfft(deg, n) * np.conj(np.fft.rfft(ref, n)), n)[:max_lag]
lag = int(np.argmax(c))

frame = FS // 50
energy = np.array([np.sum(ref[i:i + frame] ** 2) for i in range(0, len(ref) - frame, frame)])
active = np.nonzero(energy > energy.max() * 1e-4)[0]
s0 = max(0, active[0] * frame - FS // 5)
s1 = min(len(ref), (active[-1] + 1) * frame + FS // 5)
r = ref[s0:s1]
d = deg[lag + s0:lag + s1]

seg, reach = FS // 2, FS // 20
lags = []
# STOI compares envelopes of 384 ms windows at one fixed offset, so a delay that moves by a
# frame mid-call (the adaptive buffer growing under loss) reads as lost intelligibility. It is
# scored on HEARD re-assembled from each 500 ms segment at that segment's own lag (the global
# lag where a segment has no clear peak). PESQ aligns utterances itself and gets HEARD as is.
stoi_parts = []
for a in range(s0, s1 - seg, seg):
    stoi_parts.append(deg[a + lag:a + lag + seg])
    part = ref[a:a + seg]
    e = np.sum(part ** 2)
    if e < energy.max() * 1e-3 * (seg / frame):
        continue
    lo = a + lag - reach
    if lo < 0 or lo + seg + 2 * reach > len(deg):
        continue
    win = deg[lo:lo + seg + 2 * reach]
    cc = correlate(win, part, mode="valid", method="fft")
    k = int(np.argmax(cc))
    w = win[k:k + seg]
    ncc = cc[k] / np.sqrt(e * np.sum(w ** 2) + 1e-12)
    if ncc >= 0.5:
        lags.append(lag - reach + k)
        stoi_parts[-1] = w

r16 = resample_poly(r, 1, 3)
d16 = resample_poly(d, 1, 3)
try:
    p = float(pesq(16_000, r16, d16, "wb"))
except Exception as e:  # no utterances found, etc.
    print(f"pesq failed: {e}", file=sys.stderr)
    p = float("nan")
n_seg = len(stoi_parts)
tail = deg[s0 + n_seg * seg + lag:s1 + lag]
d_seg = np.concatenate(stoi_parts + [tail])[:len(r)]
s = float(stoi(r16, resample_poly(d_seg, 1, 3)[:len(r16)], 16_000, extended=False))
print(json.dumps({
    "lag_samples": lag,
    "mean_lag_samples": float(np.mean(lags)) if lags else float(lag),
    "min_lag_samples": float(np.min(lags)) if lags else float(lag),
    "max_lag_samples": float(np.max(lags)) if lags else float(lag),
    "segments": len(lags),
    "speech_s": (s1 - s0) / FS,
    "pesq_wb": p,
    "stoi": s,
}))
