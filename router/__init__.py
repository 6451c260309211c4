"""niyama.router"""
