"""Evaluation: metrics, tables, reports."""
