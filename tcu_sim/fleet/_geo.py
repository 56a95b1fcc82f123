"""Plain geometry on WGS-84 coordinates: a random point in a disc, distance, point in polygon.

City-sized areas only: a local equirectangular projection is exact to well under a metre at those scales, and
it keeps the simulation fast and free of a GIS dependency.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

__all__ = ["EARTH_RADIUS_M", "distance_m", "point_in_polygon", "random_point_in_disc"]

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)
_M_PER_DEG_LAT = math.pi * EARTH_RADIUS_M / 180.0


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def random_point_in_disc(rng: random.Random, lat: float, lon: float, radius_m: float) -> tuple[float, float]:
    """A point drawn uniformly by area from the disc of `radius_m` around (lat, lon), rounded to 1e-6 degree.

    Draws exactly two numbers from `rng`, so the stream stays aligned whatever the radius.
    """
    distance = radius_m * math.sqrt(rng.random())  # sqrt: uniform by area, not crowded at the centre
    bearing = rng.random() * 2 * math.pi
    dlat = distance * math.cos(bearing) / _M_PER_DEG_LAT
    dlon = distance * math.sin(bearing) / (_M_PER_DEG_LAT * max(math.cos(math.radians(lat)), 1e-6))
    new_lat = max(-90.0, min(90.0, lat + dlat))
    new_lon = (lon + dlon + 180.0) % 360.0 - 180.0
    # Rounded (about 0.1 m) so that manifests and snapshots print the same on every platform.
    return round(new_lat, 6), round(new_lon, 6)


def point_in_polygon(lat: float, lon: float, polygon: Sequence[tuple[float, float]]) -> bool:
    """Whether (lat, lon) lies in the polygon of (lat, lon) vertices (even-odd rule; edges are inside)."""
    inside = False
    count = len(polygon)
    for i in range(count):
        lat_a, lon_a = polygon[i]
        lat_b, lon_b = polygon[(i + 1) % count]
        if _on_segment(lat, lon, lat_a, lon_a, lat_b, lon_b):
            return True
        if (lat_a > lat) != (lat_b > lat):
            crossing_lon = lon_a + (lat - lat_a) * (lon_b - lon_a) / (lat_b - lat_a)
            if lon < crossing_lon:
                inside = not inside
    return inside


def _on_segment(lat: float, lon: float, lat_a: float, lon_a: float, lat_b: float, lon_b: float) -> bool:
    cross = (lat_b - lat_a) * (lon - lon_a) - (lon_b - lon_a) * (lat - lat_a)
    if abs(cross) > 1e-12:
        return False
    return min(lat_a, lat_b) <= lat <= max(lat_a, lat_b) and min(lon_a, lon_b) <= lon <= max(lon_a, lon_b)
