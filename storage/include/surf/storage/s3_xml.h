// The few values the S3 client reads from S3's XML answers (ListObjectsV2, CreateMultipartUpload,
// error bodies). S3's answers are flat and machine-made, so the values are found by their tags
// rather than through a DOM; what an answer says is still untrusted (a proxy, a misbehaving or
// hostile endpoint), so every reader here is bounded by the answer's size and fuzzed
// (tests/fuzz, target s3_xml).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace surf::s3xml {

// The text of the first <tag>...</tag> at or after `from`, with XML's five named entities and
// numeric character references (&#N; &#xH;) decoded; "" if absent or unterminated. `end`, when
// given, receives the offset just past the closing tag.
std::string value(std::string_view xml, std::string_view tag, size_t from = 0, size_t* end = nullptr);

// One page of ListObjectsV2: the keys in order, and where the next page starts.
struct ListPage {
  std::vector<std::string> keys;
  bool truncated = false;
  std::string next_token;  // NextContinuationToken ("" if none)
};
ListPage parse_list_page(std::string_view xml);

// An <Error> body's Code and Message, each cut to kMaxErrorText bytes with every byte outside
// printable ASCII written as \xHH, fit to quote in an error message.
inline constexpr size_t kMaxErrorText = 200;
struct ErrorBody {
  std::string code, message;
};
ErrorBody parse_error(std::string_view xml);

}  // namespace surf::s3xml
