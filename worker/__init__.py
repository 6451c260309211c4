"""niyama.worker"""
