// The S3 answers the client reads, as S3 documents them (ListObjectsV2 and Error examples from
// the S3 API reference), plus the hostile cases the fuzz target s3_xml explores.
#include <gtest/gtest.h>

#include "surf/storage/s3_xml.h"

using namespace surf;

// S3 API reference, ListObjectsV2, "Sample Response for general purpose buckets" (a truncated page).
TEST(S3Xml, ListObjectsV2Page) {
  const std::string xml = R"(<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
    <Name>bucket</Name>
    <Prefix/>
    <KeyCount>205</KeyCount>
    <MaxKeys>1000</MaxKeys>
    <IsTruncated>true</IsTruncated>
    <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
    <Contents>
        <Key>my-image.jpg</Key>
        <LastModified>2009-10-12T17:50:30.000Z</LastModified>
        <ETag>"fba9dede5f27731c9771645a39863328"</ETag>
        <Size>434234</Size>
        <StorageClass>STANDARD</StorageClass>
    </Contents>
    <Contents>
        <Key>m&amp;y&#x2F;image &#233;&lt;2&gt;.jpg</Key>
    </Contents>
</ListBucketResult>)";
  const s3xml::ListPage p = s3xml::parse_list_page(xml);
  ASSERT_EQ(p.keys.size(), 2u);
  EXPECT_EQ(p.keys[0], "my-image.jpg");
  EXPECT_EQ(p.keys[1], "m&y/image \xc3\xa9<2>.jpg");
  EXPECT_TRUE(p.truncated);
  EXPECT_EQ(p.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
}

TEST(S3Xml, LastPageAndMalformedAnswers) {
  const s3xml::ListPage last = s3xml::parse_list_page(
      "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a</Key></Contents></ListBucketResult>");
  EXPECT_EQ(last.keys, std::vector<std::string>{"a"});
  EXPECT_FALSE(last.truncated);
  // An unterminated tag ends the list; an empty key is skipped, not taken as the end.
  EXPECT_EQ(s3xml::parse_list_page("<Key></Key><Key>b</Key><Key>c").keys, std::vector<std::string>{"b"});
  EXPECT_TRUE(s3xml::parse_list_page("").keys.empty());
  // References that are not well formed, or name no character XML allows, stay as written.
  EXPECT_EQ(s3xml::value("<K>&#0;&#xD800;&#x110000;&#12a;&#;&bogus;&#x41;</K>", "K"),
            "&#0;&#xD800;&#x110000;&#12a;&#;&bogus;A");
  EXPECT_EQ(s3xml::value("<K>x</K>", "K", 100), "");
}

// S3 API reference, "Error responses": the REST error body.
TEST(S3Xml, ErrorBody) {
  const s3xml::ErrorBody e = s3xml::parse_error(R"(<?xml version="1.0" encoding="UTF-8"?>
<Error>
  <Code>NoSuchKey</Code>
  <Message>The resource you requested does not exist</Message>
  <Resource>/mybucket/myfoto.jpg</Resource>
  <RequestId>4442587FB7D0A2F9</RequestId>
</Error>)");
  EXPECT_EQ(e.code, "NoSuchKey");
  EXPECT_EQ(e.message, "The resource you requested does not exist");
}

// What a hostile endpoint puts in an error body reaches the user's terminal only as a short,
// printable excerpt.
TEST(S3Xml, ErrorTextIsCutAndPrintable) {
  const s3xml::ErrorBody e =
      s3xml::parse_error("<Code>Bad\x1b[2J\xff</Code><Message>" + std::string(100000, 'm') + "</Message>");
  EXPECT_EQ(e.code, "Bad\\x1b[2J\\xff");
  EXPECT_LE(e.message.size(), s3xml::kMaxErrorText + 8);
  EXPECT_EQ(e.message.substr(e.message.size() - 3), "...");
}
