// The signer against AWS's published Signature Version 4 examples.
#include <gtest/gtest.h>

#include "surf/error.h"
#include "surf/storage/s3.h"
#include "surf/storage/sigv4.h"

using namespace surf;

// AWS S3 documentation, "Example: GET Object" (Authenticating Requests, header-based).
TEST(SigV4, S3GetObjectExample) {
  sigv4::Request r;
  r.method = "GET";
  r.canonical_uri = "/test.txt";
  const std::string empty_hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  r.payload_hash = empty_hash;
  r.headers = {{"Host", "examplebucket.s3.amazonaws.com"},
               {"Range", "bytes=0-9"},
               {"x-amz-content-sha256", empty_hash},
               {"x-amz-date", "20130524T000000Z"}};
  const auto s = sigv4::sign(r, "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1", "s3",
                             "20130524T000000Z");
  EXPECT_EQ(s.canonical_request,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
            "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
            "x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(s.string_to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  EXPECT_EQ(s.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  EXPECT_EQ(s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

// The AWS Signature Version 4 test suite (2011 edition): repeated query keys sorted by value,
// a Date header instead of X-Amz-Date.
TEST(SigV4, TestSuiteGetWithRepeatedQueryKeys) {
  sigv4::Request r;
  r.method = "GET";
  r.canonical_uri.assign(1, '/');  // (assigning the literal "/" trips GCC 12's false -Wrestrict, PR105329)
  r.query = {{"foo", "Zoo"}, {"foo", "aha"}};
  r.headers = {{"Date", "Mon, 09 Sep 2011 23:36:00 GMT"}, {"Host", "host.foo.com"}};
  r.payload_hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  const auto s = sigv4::sign(r, "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "host",
                             "20110909T233600Z");
  EXPECT_EQ(s.canonical_request,
            "GET\n/\nfoo=Zoo&foo=aha\ndate:Mon, 09 Sep 2011 23:36:00 GMT\nhost:host.foo.com\n\ndate;host\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(s.string_to_sign,
            "AWS4-HMAC-SHA256\n20110909T233600Z\n20110909/us-east-1/host/aws4_request\n"
            "e25f777ba161a0f1baf778a87faf057187cf5987f17953320e3ca399feb5f00d");
  EXPECT_EQ(s.signature, "be7148d34ebccdc6423b19085378aa0bee970bdc61d144bd1a8c48c33079ab09");
}

TEST(SigV4, UriEncodingAndHashes) {
  EXPECT_EQ(sigv4::uri_encode("a b/c~d+e", false), "a%20b/c~d%2Be");
  EXPECT_EQ(sigv4::uri_encode("a/b", true), "a%2Fb");
  EXPECT_EQ(sigv4::sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sigv4::amz_date_now().size(), 16u);
}

// The backend's addressing feeds the signer: with AWS's endpoint s3.amazonaws.com, bucket
// examplebucket and key test.txt are addressed virtual-hosted style, and the request signed from
// that address is AWS's published "Example: GET Object" (above), byte for byte.
TEST(SigV4, VirtualHostedAddressSignsAsAwsPublishedExample) {
  S3Config c;
  c.endpoint = "https://s3.amazonaws.com";
  const S3Address a = s3_address(c, "examplebucket", "test.txt");
  EXPECT_TRUE(a.virtual_hosted);
  EXPECT_EQ(a.scheme, "https");
  EXPECT_EQ(a.port, "443");
  sigv4::Request r;
  r.method = "GET";
  r.canonical_uri = a.path;
  const std::string empty_hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  r.payload_hash = empty_hash;
  r.headers = {{"host", a.host_header},
               {"range", "bytes=0-9"},
               {"x-amz-content-sha256", empty_hash},
               {"x-amz-date", "20130524T000000Z"}};
  const auto s = sigv4::sign(r, "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1", "s3",
                             "20130524T000000Z");
  EXPECT_EQ(s.canonical_request,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
            "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
            "x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(s.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

// Path style (custom endpoints, or forced): the bucket moves from the Host header into the
// canonical URI. AWS publishes no signed path-style S3 example; the s3 suite has moto (which
// checks every signature) verify both styles.
TEST(SigV4, AddressingStyles) {
  S3Config aws;  // no endpoint: AWS in the configured region
  aws.region = "eu-west-3";
  S3Address a = s3_address(aws, "my-bucket", "a%20b/c.txt");
  EXPECT_EQ(a.host_header, "my-bucket.s3.eu-west-3.amazonaws.com");
  EXPECT_EQ(a.path, "/a%20b/c.txt");
  a = s3_address(aws, "my.dotted.bucket", "k");  // dots do not fit the wildcard certificate
  EXPECT_FALSE(a.virtual_hosted);
  EXPECT_EQ(a.host_header, "s3.eu-west-3.amazonaws.com");
  EXPECT_EQ(a.path, "/my.dotted.bucket/k");
  aws.addressing = "path";
  a = s3_address(aws, "my-bucket", "k");
  EXPECT_EQ(a.host_header, "s3.eu-west-3.amazonaws.com");
  EXPECT_EQ(a.path, "/my-bucket/k");
  S3Config local;
  local.endpoint = "http://127.0.0.1:9000/";
  a = s3_address(local, "my-bucket", "k");
  EXPECT_FALSE(a.virtual_hosted);
  EXPECT_EQ(a.host_header, "127.0.0.1:9000");
  EXPECT_EQ(a.path, "/my-bucket/k");
  EXPECT_EQ(s3_address(local, "my-bucket", "").path, "/my-bucket");
  local.addressing = "virtual";
  local.endpoint = "https://minio.example";
  a = s3_address(local, "my-bucket", "k");
  EXPECT_EQ(a.host_header, "my-bucket.minio.example");
  EXPECT_EQ(a.path, "/k");
  EXPECT_THROW(s3_address(local, "Bad_Bucket", "k"), Error);
  local.addressing = "sideways";
  EXPECT_THROW(s3_address(local, "my-bucket", "k"), Error);
  local.addressing = "auto";
  local.endpoint = "ftp://x";
  EXPECT_THROW(s3_address(local, "my-bucket", "k"), Error);
}
