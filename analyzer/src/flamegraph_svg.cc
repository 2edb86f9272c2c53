// The flame graph renderer: folded stacks -> one self-contained SVG. Roots at the bottom,
// callees above their callers, siblings in name order (as flamegraph.pl draws them), widths in
// proportion to samples. The behaviour (zoom, search, tooltips) is flamegraph.js, embedded.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string_view>

#include "flamegraph_js.h"
#include "probing/analyzer/export.h"

namespace probing::analyzer {
namespace {

constexpr int kFrameHeight = 16;
constexpr int kPad = 10;
constexpr int kTop = 56;     // title, subtitle, buttons
constexpr int kBottom = 34;  // status line
constexpr double kCharWidth = 12 * 0.59;
constexpr double kMinWidth = 0.1;  // pixels: narrower frames (and what they hold) are left out

struct Node {
  std::string name;
  std::string stack;  // root first, ';' between frames, this one last (FlameGraphOptions::style)
  uint64_t value = 0;
  std::map<std::string, size_t> children;  // name -> index in the node list
};

std::string Escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // XML 1.0 forbids most control characters, even escaped.
        if (static_cast<unsigned char>(c) < 0x20)
          out += ' ';
        else
          out += c;
    }
  }
  return out;
}

std::string Fit(const std::string& name, double width) {
  int n = static_cast<int>(std::floor((width - 6) / kCharWidth));
  if (n < 3) return "";
  if (static_cast<int>(name.size()) <= n) return name;
  return name.substr(0, static_cast<size_t>(n - 2)) + "..";
}

// A warm colour from the frame's function name, the same for the same name in every graph;
// thread and process roots are grey-blue, so they read as labels, not code.
std::string Colour(const std::string& name, bool root) {
  if (root) return "rgb(160,170,200)";
  std::string_view func(name);
  func = func.substr(0, func.find(" ("));
  uint32_t h = 2166136261u;  // FNV-1a
  for (char c : func) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
  const double a = static_cast<double>(h & 0xff) / 255.0;
  const double b = static_cast<double>((h >> 8) & 0xff) / 255.0;
  const double c = static_cast<double>((h >> 16) & 0xff) / 255.0;
  char buf[32];
  std::snprintf(buf, sizeof buf, "rgb(%d,%d,%d)", 205 + static_cast<int>(50 * c),
                static_cast<int>(230 * a), static_cast<int>(55 * b));
  return buf;
}

std::string Number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

}  // namespace

void WriteFlameGraphSvg(const FoldedStacks& folded, const FlameGraphOptions& options,
                        std::ostream& out) {
  // The stacks as a tree; node 0 is an unnamed root above the thread (or process) roots.
  std::vector<Node> nodes(1);
  for (const auto& [stack, n] : folded.stacks) {
    size_t at = 0;
    nodes[0].value += n;
    size_t begin = 0;
    while (begin <= stack.size()) {
      size_t end = stack.find(';', begin);
      if (end == std::string::npos) end = stack.size();
      std::string part = stack.substr(begin, end - begin);
      auto it = nodes[at].children.find(part);
      size_t child;
      if (it == nodes[at].children.end()) {
        child = nodes.size();
        nodes[at].children.emplace(part, child);
        nodes.push_back(Node{part, at == 0 ? part : nodes[at].stack + ";" + part, 0, {}});
      } else {
        child = it->second;
      }
      nodes[child].value += n;
      at = child;
      begin = end + 1;
    }
  }
  const double total = static_cast<double>(nodes[0].value);
  const double usable = options.width - 2 * kPad;
  const double per_sample = total > 0 ? usable / total : 0;

  // Depth-first layout; frames narrower than kMinWidth are dropped with their subtree.
  struct Placed {
    size_t node;
    uint64_t x;  // samples before it on its row
    int depth;
    bool label;  // a thread or process root: drawn as a label, not as code
  };
  std::vector<Placed> placed;
  int max_depth = 0;
  std::vector<Placed> todo;
  uint64_t x = 0;
  for (const auto& [name, child] : nodes[0].children) {
    todo.push_back({child, x, 0, true});
    x += nodes[child].value;
  }
  std::reverse(todo.begin(), todo.end());
  while (!todo.empty()) {
    Placed p = todo.back();
    todo.pop_back();
    if (static_cast<double>(nodes[p.node].value) * per_sample < kMinWidth) continue;
    placed.push_back(p);
    max_depth = std::max(max_depth, p.depth);
    uint64_t cx = p.x;
    std::vector<Placed> kids;
    for (const auto& [name, child] : nodes[p.node].children) {
      kids.push_back(
          {child, cx, p.depth + 1, p.depth == 0 && nodes[p.node].name.rfind("process ", 0) == 0});
      cx += nodes[child].value;
    }
    todo.insert(todo.end(), kids.rbegin(), kids.rend());
  }
  const int height = kTop + (max_depth + 1) * kFrameHeight + kBottom;

  out << "<?xml version=\"1.0\" standalone=\"no\"?>\n"
      << "<svg version=\"1.1\" width=\"" << options.width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << options.width << " " << height
      << "\" xmlns=\"http://www.w3.org/2000/svg\">\n"
      << "<style>\n"
      << "text { font-family: Verdana, sans-serif; font-size: 12px; fill: rgb(0,0,0); }\n"
      << "#title { font-size: 17px; text-anchor: middle; }\n"
      << "#subtitle { fill: rgb(80,80,80); text-anchor: middle; }\n"
      << "g.f { cursor: pointer; }\n"
      << "g.f:hover rect { stroke: black; stroke-width: 0.5; }\n"
      << "g.f text { pointer-events: none; }\n"
      << "g.parent { opacity: 0.5; }\n"
      << ".button { cursor: pointer; fill: rgb(40,40,160); }\n"
      << ".hide { display: none; }\n"
      << "</style>\n"
      << "<rect x=\"0\" y=\"0\" width=\"" << options.width << "\" height=\"" << height
      << "\" fill=\"rgb(248,248,240)\"/>\n"
      << "<text id=\"title\" x=\"" << options.width / 2 << "\" y=\"22\">" << Escape(options.title)
      << "</text>\n"
      << "<text id=\"subtitle\" x=\"" << options.width / 2 << "\" y=\"40\">"
      << Escape(options.subtitle.empty() ? std::to_string(folded.samples) + " samples"
                                         : options.subtitle)
      << "</text>\n"
      << "<text id=\"unzoom\" class=\"button hide\" x=\"" << kPad
      << "\" y=\"22\">Reset zoom</text>\n"
      << "<text id=\"search\" class=\"button\" x=\"" << options.width - kPad - 90
      << "\" y=\"22\">Search</text>\n"
      << "<text id=\"matched\" x=\"" << options.width - kPad - 120 << "\" y=\"" << height - 12
      << "\"></text>\n"
      << "<text id=\"details\" x=\"" << kPad << "\" y=\"" << height - 12 << "\"> </text>\n";
  if (placed.empty())
    out << "<text x=\"" << options.width / 2 << "\" y=\"" << kTop + 20
        << "\" style=\"text-anchor: middle\">No samples with Python frames</text>\n";

  out << "<g id=\"frames\" data-total=\"" << nodes[0].value << "\">\n";
  size_t id = 0;
  for (const Placed& p : placed) {
    const Node& n = nodes[p.node];
    const double fx = kPad + static_cast<double>(p.x) * per_sample;
    const double fw = static_cast<double>(n.value) * per_sample;
    const int fy = height - kBottom - (p.depth + 1) * kFrameHeight;
    char share[32];
    std::snprintf(share, sizeof share, "%.2f%%", 100.0 * static_cast<double>(n.value) / total);
    const std::string name = Escape(n.name);
    FrameStyle style;
    if (options.style) style = options.style(n.stack);
    out << "<g class=\"f\" id=\"f" << id++ << "\" data-x=\"" << p.x << "\" data-n=\"" << n.value
        << "\" data-d=\"" << p.depth << "\" data-name=\"" << name << "\"><title>" << name << " ("
        << n.value << (n.value == 1 ? " sample, " : " samples, ") << share
        << (style.note.empty() ? "" : "; " + Escape(style.note)) << ")</title><rect x=\""
        << Number(fx) << "\" y=\"" << fy << "\" width=\"" << Number(fw) << "\" height=\""
        << kFrameHeight - 1 << "\" rx=\"2\" fill=\""
        << (style.fill.empty() ? Colour(n.name, p.label) : Escape(style.fill)) << "\"/><text x=\""
        << Number(fx + 3) << "\" y=\"" << fy + 11 << "\">" << Escape(Fit(n.name, fw))
        << "</text></g>\n";
  }
  out << "</g>\n<script type=\"text/ecmascript\"><![CDATA[\n"
      << kFlameGraphScript << "\n]]></script>\n</svg>\n";
}

}  // namespace probing::analyzer
