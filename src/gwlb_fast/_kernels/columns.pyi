"""Rows of many columns at once: the gather behind ``PacketBatch[rows]``."""
import numpy as np

def take_columns(rows: np.ndarray, cols: list[np.ndarray]) -> list[np.ndarray]: ...
