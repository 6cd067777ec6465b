"""pcap source: classic pcap / pcapng captures of feed lines replayed through A/B arbitration."""
