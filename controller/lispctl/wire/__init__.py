"""lispctl.wire: sans-IO codecs for LISP control and data-plane headers.

Bytes in, frozen dataclasses out, and back. Nothing here opens a socket or
reads the clock. Every decoder raises only MalformedMessage. See docs/wire.md.
"""
from .addresses import (AFI_DISTINGUISHED_NAME, AFI_IPV4, AFI_IPV6, AFI_LCAF, AFI_MAC, AFI_NONE, MAX_LCAF_DEPTH,
                        NO_ADDRESS, Address, AfiList, DistinguishedName, ElpHop, ExplicitLocatorPath, InstanceId,
                        JsonData, KeyValue, MacAddress, NatTraversal, NoAddress, ReplicationEntry, ReplicationList,
                        SourceDestKey, UnknownLcaf, decode_address, encode_address)
from .auth import auth_fields, compute_mac, sign, signed, verify
from .codec import ControlMessage, decode_control, decode_ecm_message, encode
from .control import (ALG_HMAC_SHA1, ALG_HMAC_SHA256, ALG_NONE, AUTH_DATA_LENGTHS, ECM, INFO, MAP_NOTIFY,
                      MAP_NOTIFY_ACK, MAP_REFERRAL, MAP_REGISTER, MAP_REPLY, MAP_REQUEST, SHARED_EXTENSION,
                      InfoReply, InfoRequest, MapNotify, MapNotifyAck, MapReferral, MapRegister, MapReply,
                      MapRequest, SharedExtension)
from .cpm import CPM_SUB_TYPE, ChangePriority, decode_cpm, is_cpm, sign_cpm, verify_cpm
from .convert import (eid_record, from_eid_prefix, locator_to_rloc, record_prefix, request_record,
                      rloc_to_locator, source_eid_prefix, to_eid_prefix)
from .data import DATA_HEADER_LEN, DataHeader, decode_data_header
from .ecm import EncapsulatedControlMessage
from .errors import MalformedMessage
from .records import (REQUEST_RECORD_N, TTL_INFINITE, EidRecord, LocatorRecord, ReferralRecord, RequestRecord, Signature)

# RFC 8111 referral ACT values.
NODE_REFERRAL, MS_REFERRAL, MS_ACK, MS_NOT_REGISTERED, DELEGATION_HOLE, NOT_AUTHORITATIVE = range(6)

__all__ = [name for name in dir() if not name.startswith("_")]
