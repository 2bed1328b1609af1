// A progress line on stderr for long work, drawn only when stderr is a terminal: redrawn in
// place with \r at most 10 times a second, ended with a newline. Silent when stderr is a pipe
// or a file, so logs and scripts see only the final summary.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace surf::cli {

class ProgressLine {
 public:
  ProgressLine();  // active iff isatty(2)
  ~ProgressLine() { finish(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  bool active() const { return active_; }
  // Redraws with `text` unless the last draw was under 100 ms ago (force: draw anyway).
  void update(const std::string& text, bool force = false);
  // Ends the line (a newline after the last draw); nothing if nothing was drawn.
  void finish();
  double seconds() const;  // since construction

 private:
  bool active_;
  bool drawn_ = false;
  size_t last_width_ = 0;
  std::chrono::steady_clock::time_point start_, last_;
};

std::string human_bytes(uint64_t bytes);    // 1.5 MB, 3.2 GB (decimal units)
std::string human_seconds(double seconds);  // 42 s, 3 min 5 s, 1 h 2 min

}  // namespace surf::cli
