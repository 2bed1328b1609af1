#!/usr/bin/env python3
"""A local S3 endpoint for the tests: moto in signature-checking mode on 127.0.0.1.

Starts moto on a free port with INITIAL_NO_AUTH_ACTION_COUNT so that only the bootstrap calls run
unauthenticated (create an IAM user, its access key, an allow-all policy), creates the bucket(s)
named on the command line with the new key, prints one line

    READY <port> <access key id> <secret access key>

and serves until stdin closes or SIGTERM. Every later request must carry a valid SigV4 signature."""
import os
import signal
import socket
import sys
import threading

os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
try:
    import boto3
    from moto.server import ThreadedMotoServer
except ImportError as e:  # the caller reports it
    print(f"UNAVAILABLE {e}", flush=True)
    sys.exit(3)

s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
endpoint = f"http://127.0.0.1:{port}"
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam.create_user(UserName="surf-tests")
key = iam.create_access_key(UserName="surf-tests")["AccessKey"]
iam.put_user_policy(UserName="surf-tests", PolicyName="all",
                    PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}')
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
for bucket in sys.argv[1:]:
    s3.create_bucket(Bucket=bucket)
print(f"READY {port} {key['AccessKeyId']} {key['SecretAccessKey']}", flush=True)

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
stop.wait()
server.stop()
