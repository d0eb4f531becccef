"""Calibration data readers and statistics collection."""
