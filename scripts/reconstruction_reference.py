#!/usr/bin/env python3
"""Independent reference for lop's least-squares FFN reconstruction (NumPy, float64).

Reads a JSON request on stdin: {"h": [[...]] (tokens x width activations), "w": [[...]] (out x width down-projection),
"keep": k, "ridge": r, optional "b": [...] (out)}. Writes {"w_refit": [[...]]} (out x k): the minimiser of
||W H^T - W' H_k^T||^2 + lambda ||W' - W_k||^2 (the ridge pulls towards the kept weights W_k = W[:, :k]) with
lambda = r * mean(diag(H_k^T H_k)), solved as an augmented
least-squares problem by numpy.linalg.lstsq (SVD), not through the normal equations lop uses. With "b", the
target is W h + b and the re-fit has an unpenalised bias too: {"w_refit": ..., "b_refit": [...]}.
"""
import json
import sys

import numpy as np


def main():
    request = json.load(sys.stdin)
    h = np.asarray(request["h"], dtype=np.float64)
    w = np.asarray(request["w"], dtype=np.float64)
    k = int(request["keep"])
    ridge = float(request["ridge"])
    bias = np.asarray(request["b"], dtype=np.float64) if "b" in request else None
    hk = h[:, :k]
    target = h @ w.T                        # tokens x out: what the dense FFN's down-projection produces
    lam = ridge * np.mean(np.sum(hk * hk, axis=0))
    penalty = np.sqrt(lam) * np.eye(k)
    if bias is not None:
        target = target + bias
        hk = np.hstack([hk, np.ones((h.shape[0], 1))])
        penalty = np.hstack([penalty, np.zeros((k, 1))])   # the bias is not penalised
    a = np.vstack([hk, penalty])
    b = np.vstack([target, np.sqrt(lam) * w[:, :k].T])   # the penalty's target: the kept weights
    x, *_ = np.linalg.lstsq(a, b, rcond=None)   # (k [+ 1]) x out
    reply = {"w_refit": x[:k].T.tolist()}
    if bias is not None:
        reply["b_refit"] = x[k].tolist()
    json.dump(reply, sys.stdout)


if __name__ == "__main__":
    main()
