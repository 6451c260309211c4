"""niyama.bench"""
