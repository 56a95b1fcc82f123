"""Great-circle geometry for trips: distance and the point a given fraction of the way along."""

from __future__ import annotations

import math

__all__ = ["EARTH_RADIUS_KM", "distance_km", "intermediate_point"]

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)


def _angle(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Central angle in radians (haversine: well conditioned for short distances)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((phi2 - phi1) / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(
        math.radians(lon2 - lon1) / 2
    ) ** 2
    return 2 * math.asin(min(1.0, math.sqrt(a)))


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres."""
    return EARTH_RADIUS_KM * _angle(lat1, lon1, lat2, lon2)


def intermediate_point(
    lat1: float, lon1: float, lat2: float, lon2: float, fraction: float
) -> tuple[float, float]:
    """The point `fraction` (0..1) of the way from the first point to the second along the great circle."""
    fraction = min(1.0, max(0.0, fraction))
    delta = _angle(lat1, lon1, lat2, lon2)
    if delta < 1e-12 or fraction == 0.0:
        return lat1, lon1
    if fraction == 1.0:
        return lat2, lon2
    a = math.sin((1 - fraction) * delta) / math.sin(delta)
    b = math.sin(fraction * delta) / math.sin(delta)
    phi1, lmb1, phi2, lmb2 = map(math.radians, (lat1, lon1, lat2, lon2))
    x = a * math.cos(phi1) * math.cos(lmb1) + b * math.cos(phi2) * math.cos(lmb2)
    y = a * math.cos(phi1) * math.sin(lmb1) + b * math.cos(phi2) * math.sin(lmb2)
    z = a * math.sin(phi1) + b * math.sin(phi2)
    lat = math.degrees(math.atan2(z, math.hypot(x, y)))
    lon = math.degrees(math.atan2(y, x))
    return max(-90.0, min(90.0, lat)), max(-180.0, min(180.0, lon))
