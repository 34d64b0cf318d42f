"""Instruments, floor 4: timing, memory, energy meters, FLOPs, contention, quality drift, machine info."""
