#include "probing/live/rdma.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

namespace probing::live {
namespace fs = std::filesystem;

namespace {

std::string ReadLine(const fs::path& p) {
  std::ifstream in(p);
  std::string s;
  std::getline(in, s);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

uint64_t Counter(const std::map<std::string, uint64_t>& c, const char* name) {
  auto it = c.find(name);
  return it == c.end() ? 0 : it->second;
}

}  // namespace

uint64_t RdmaPort::tx_bytes() const { return Counter(counters, "port_xmit_data") * 4; }
uint64_t RdmaPort::rx_bytes() const { return Counter(counters, "port_rcv_data") * 4; }

Result<std::vector<RdmaPort>> ReadRdmaPorts(const std::string& root) {
  std::vector<RdmaPort> ports;
  std::error_code ec;
  if (!fs::exists(root, ec)) return ports;
  for (fs::directory_iterator dev(root, ec), end; !ec && dev != end; dev.increment(ec)) {
    fs::path port_dir = dev->path() / "ports";
    std::error_code pec;
    for (fs::directory_iterator p(port_dir, pec), pend; !pec && p != pend; p.increment(pec)) {
      RdmaPort port;
      port.device = dev->path().filename().string();
      try {
        port.port = std::stoi(p->path().filename().string());
      } catch (...) {
        continue;
      }
      std::string state = ReadLine(p->path() / "state");  // "4: ACTIVE"
      auto colon = state.find(':');
      port.state = colon == std::string::npos ? state : state.substr(colon + 2);
      port.rate = ReadLine(p->path() / "rate");
      port.link_layer = ReadLine(p->path() / "link_layer");
      std::error_code cec;
      for (fs::directory_iterator c(p->path() / "counters", cec), cend; !cec && c != cend;
           c.increment(cec)) {
        std::string v = ReadLine(c->path());
        char* stop = nullptr;
        uint64_t n = std::strtoull(v.c_str(), &stop, 10);
        if (!v.empty() && stop != nullptr && *stop == '\0')
          port.counters[c->path().filename().string()] = n;
      }
      ports.push_back(std::move(port));
    }
  }
  if (ec) return Internal("cannot read " + root + ": " + ec.message());
  std::sort(ports.begin(), ports.end(), [](const RdmaPort& a, const RdmaPort& b) {
    return a.device != b.device ? a.device < b.device : a.port < b.port;
  });
  return ports;
}

std::vector<RdmaPortRates> RdmaRates(const std::vector<RdmaPort>& first,
                                     const std::vector<RdmaPort>& second, double seconds) {
  std::vector<RdmaPortRates> out;
  for (const RdmaPort& p : second) {
    RdmaPortRates r;
    r.port = p;
    const RdmaPort* before = nullptr;
    for (const RdmaPort& q : first)
      if (q.device == p.device && q.port == p.port) before = &q;
    auto rate = [&](uint64_t a, uint64_t b) -> std::optional<double> {
      if (b < a || seconds <= 0) return std::nullopt;
      return static_cast<double>(b - a) / seconds;
    };
    if (before != nullptr) {
      r.tx_bytes_per_s = rate(before->tx_bytes(), p.tx_bytes());
      r.rx_bytes_per_s = rate(before->rx_bytes(), p.rx_bytes());
      auto has = [](const RdmaPort& port, const char* name) {
        return port.counters.count(name) != 0;
      };
      if (has(*before, "port_xmit_packets") && has(p, "port_xmit_packets"))
        r.tx_packets_per_s = rate(Counter(before->counters, "port_xmit_packets"),
                                  Counter(p.counters, "port_xmit_packets"));
      if (has(*before, "port_rcv_packets") && has(p, "port_rcv_packets"))
        r.rx_packets_per_s = rate(Counter(before->counters, "port_rcv_packets"),
                                  Counter(p.counters, "port_rcv_packets"));
    }
    for (const char* name : {"port_rcv_errors", "port_xmit_discards", "symbol_error", "link_downed",
                             "port_rcv_remote_physical_errors"})
      r.errors += Counter(p.counters, name);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace probing::live
