"""Object stores the registry writes to: S3 through boto3 (AWS, MinIO, Ceph RGW) and a folder
with the same semantics (an on-premises volume)."""
