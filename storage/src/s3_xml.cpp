#include "surf/storage/s3_xml.h"

#include <cstdint>

namespace surf::s3xml {

namespace {

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// &#N; or &#xH; at the start of `s`: the code point and the reference's length, or 0 if `s` does
// not start with a well-formed reference to a character XML allows.
size_t numeric_reference(std::string_view s, uint32_t& cp) {
  if (s.size() < 4 || s[0] != '&' || s[1] != '#') return 0;
  const bool hex = s[2] == 'x';
  size_t i = hex ? 3 : 2;
  uint32_t v = 0;
  size_t digits = 0;
  for (; i < s.size() && s[i] != ';'; ++i, ++digits) {
    const char c = s[i];
    int d = -1;
    if (c >= '0' && c <= '9') d = c - '0';
    if (hex && c >= 'a' && c <= 'f') d = c - 'a' + 10;
    if (hex && c >= 'A' && c <= 'F') d = c - 'A' + 10;
    if (d < 0 || digits >= 8) return 0;
    v = v * (hex ? 16 : 10) + static_cast<uint32_t>(d);
  }
  if (i == s.size() || digits == 0) return 0;
  if (v == 0 || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
  cp = v;
  return i + 1;
}

std::string decode_entities(std::string_view v) {
  static constexpr std::pair<std::string_view, char> named[] = {
      {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
  std::string out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size();) {
    if (v[i] == '&') {
      const std::string_view rest = v.substr(i);
      size_t used = 0;
      for (const auto& [e, c] : named) {
        if (rest.starts_with(e)) {
          out += c;
          used = e.size();
          break;
        }
      }
      uint32_t cp = 0;
      if (used == 0 && (used = numeric_reference(rest, cp)) != 0) append_utf8(out, cp);
      if (used != 0) {
        i += used;
        continue;
      }
    }
    out += v[i++];
  }
  return out;
}

std::string printable(std::string_view text) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < text.size() && out.size() < kMaxErrorText; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    }
  }
  if (out.size() >= kMaxErrorText && text.size() > kMaxErrorText) out += "...";
  return out;
}

}  // namespace

std::string value(std::string_view xml, std::string_view tag, size_t from, size_t* end) {
  std::string open = "<", close = "</";
  open.append(tag).push_back('>');
  close.append(tag).push_back('>');
  if (from > xml.size()) return "";
  const size_t a = xml.find(open, from);
  if (a == std::string_view::npos) return "";
  const size_t b = xml.find(close, a + open.size());
  if (b == std::string_view::npos) return "";
  if (end) *end = b + close.size();
  return decode_entities(xml.substr(a + open.size(), b - a - open.size()));
}

ListPage parse_list_page(std::string_view xml) {
  ListPage page;
  size_t at = 0, end = 0;
  // Each pass moves `at` past a closing tag, so the loop ends within xml.size() passes.
  while (at < xml.size()) {
    end = 0;
    std::string key = value(xml, "Key", at, &end);
    if (end == 0) break;
    if (!key.empty()) page.keys.push_back(std::move(key));
    at = end;
  }
  page.truncated = value(xml, "IsTruncated") == "true";
  page.next_token = value(xml, "NextContinuationToken");
  return page;
}

ErrorBody parse_error(std::string_view xml) {
  return {printable(value(xml, "Code")), printable(value(xml, "Message"))};
}

}  // namespace surf::s3xml
