#include "moto_process.h"

#include <sstream>
#include <stdexcept>

#include "test_util.h"

namespace surf::test {

MotoProcess::MotoProcess(const std::vector<std::string>& buckets) {
  std::vector<std::string> argv = {"/usr/bin/env", "python3",
                                   (fixtures_dir().parent_path() / "s3" / "moto_server.py").string()};
  argv.insert(argv.end(), buckets.begin(), buckets.end());
  std::string line;
  try {
    child_.start(argv, true);
    line = child_.read_line(std::chrono::seconds(60));
  } catch (const std::runtime_error& e) {
    why_ = e.what();
    return;
  }
  std::istringstream s(line);
  std::string word;
  s >> word;
  if (word == "READY") {
    s >> port_ >> key_ >> secret_;
  } else {
    why_ = line.empty() ? "moto did not start (is python3 with moto and boto3 installed?)" : line;
    port_ = 0;
  }
}

}  // namespace surf::test
