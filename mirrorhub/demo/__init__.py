"""``mirrorhub demo``: a sample origin, three local mirrors with invented locations, a GeoIP
database for pretend clients, and the dispatcher on SQLite.

- :mod:`~mirrorhub.demo.tree`: the sample origin tree and the mirrors' differing copies;
- :mod:`~mirrorhub.demo.mirror_server`: a small static server with nginx-style listings;
- :mod:`~mirrorhub.demo.run`: the scenario (mirrors, clients, examples) and orchestration.
"""
