"""UDP multicast source with A/B line arbitration and packet gap detection."""
