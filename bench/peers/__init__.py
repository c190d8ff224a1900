"""Servers the hub is compared with, written for the benchmark."""
