"""Firewall return path: echo Geneve frames toward the GWLB and build TCP RSTs inside Geneve (batched, nogil)."""
import numpy as np

KIND_ECHO: int  # 0: the input frame, outer MACs and IPv4 addresses swapped
KIND_RST_TO_SENDER: int  # 1: RST answering the inner segment (RFC 9293 3.10.7.1), dst -> src
KIND_RST_TO_RECEIVER: int  # 2: RST on behalf of the segment's sender, src -> dst, seq = SEG.SEQ + SEG.LEN
RST_INNER_LEN: int  # 40: inner IPv4 (20) + TCP (20)

def build_returns(
    data: np.ndarray,  # const uint8[::1]
    off: np.ndarray,  # const int64[n]
    caplen: np.ndarray,  # const uint32[n]
    linktype: np.ndarray,  # const uint16[n]
    inner_off: np.ndarray,  # const int32[n]
    rows: np.ndarray,  # const int64[m]
    kind: np.ndarray,  # const uint8[m]
    out: np.ndarray,  # uint8[::1] out
    out_off: np.ndarray,  # const int64[m]
    out_status: np.ndarray,  # uint8[m] out
) -> int:
    """Write echo / RST frames for ``rows`` into ``out`` at ``out_off`` (length caplen, or inner_off + 40 for RSTs).

    Returns the number of frames that could not be built (their out_status says why)."""
