// RDMA port counters from sysfs (/sys/class/infiniband/<device>/ports/<n>/): state, rate, link
// layer and the standard counters, read twice an interval apart for rates. The root can point
// elsewhere (a copied or fake tree). No target process is involved: the counters are the
// machine's.
//
//   auto ports = probing::live::ReadRdmaPorts("/sys/class/infiniband");
//   if (ports.ok()) for (const RdmaPort& p : *ports) ...
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "probing/base/status.h"

namespace probing::live {

struct RdmaPort {
  std::string device;
  int port = 0;
  std::string state;       // e.g. ACTIVE
  std::string rate;        // e.g. "100 Gb/sec (4X EDR)"
  std::string link_layer;  // InfiniBand or Ethernet
  // counters/<name> as read; port_xmit_data and port_rcv_data are in 4-byte units there.
  std::map<std::string, uint64_t> counters;
  uint64_t tx_bytes() const;
  uint64_t rx_bytes() const;
};

// One port's counters now and their rates between two readings (nullopt where a counter is
// missing or went backwards, as after a reset).
struct RdmaPortRates {
  RdmaPort port;  // the second reading
  std::optional<double> tx_bytes_per_s, rx_bytes_per_s, tx_packets_per_s, rx_packets_per_s;
  uint64_t errors = 0;  // receive errors, transmit discards, symbol errors, link downs, remote
                        // physical errors: summed
};

// Pairs the ports of two readings `seconds` apart (a port new in the second has no rates).
std::vector<RdmaPortRates> RdmaRates(const std::vector<RdmaPort>& first,
                                     const std::vector<RdmaPort>& second, double seconds);

// Every port under `root`, sorted by device and port. An empty list when there are none; an
// error only when `root` exists but cannot be read.
Result<std::vector<RdmaPort>> ReadRdmaPorts(const std::string& root);

}  // namespace probing::live
