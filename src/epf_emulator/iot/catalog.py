"""The catalogue of the emulated OT world: device types, vendors, protocols, CVE wording.

Owns the fixed vocabularies ``iot.fleet`` draws OT devices from (defender-apis.md C.2: the
documented ``type`` examples, nullable ``operatingSystem`` values, protocol names), with the
weights and the Purdue layers and categories the console's v3 objects show.

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

__all__ = [
    "CVE_TEMPLATES",
    "FIRMWARE_TYPES",
    "MDE_OS",
    "PROTOCOLS",
    "PROTOCOLS_BY_TYPE",
    "TYPES",
]

# type -> (weight, category, Purdue layer, vendors (None = unknown), OS choices)
TYPES: dict[str, tuple[float, str, str, tuple[str | None, ...], tuple[str | None, ...]]] = {
    "PLC": (
        0.22,
        "ICS",
        "Process Control",
        ("Siemens AG", "Rockwell Automation", "Schneider Electric", "Omron Corporation", None),
        (None,),
    ),
    "HMI": (
        0.10,
        "ICS",
        "Supervisory",
        ("Siemens AG", "Rockwell Automation", "Advantech Co., Ltd.", None),
        ("Windows 10 64", "Windows 7 64", None),
    ),
    "Engineering Station": (
        0.05,
        "ICS",
        "Supervisory",
        ("Dell Inc.", "Hewlett Packard", None),
        ("Windows 10 64", "Windows Server 2019"),
    ),
    "Historian": (
        0.04,
        "ICS",
        "Supervisory",
        ("OSIsoft, LLC", "AVEVA Group plc"),
        ("Windows Server 2019", "Windows Server 2016"),
    ),
    "Switch": (
        0.10,
        "Network Device",
        "Process Control",
        ("Cisco Systems, Inc", "Hirschmann Automation and Control GmbH", "Moxa Inc."),
        ("Linux", None),
    ),
    "Router": (0.04, "Network Device", "Supervisory", ("Cisco Systems, Inc", "Moxa Inc."), (None,)),
    "IED": (
        0.12,
        "ICS",
        "Process Control",
        ("ABB Switzerland Ltd, Power Systems", "Schweitzer Engineering Laboratories", None),
        (None,),
    ),
    "RTU": (0.08, "ICS", "Process Control", ("Schneider Electric", "ABB Ltd", None), (None,)),
    "DCS Controller": (
        0.07,
        "ICS",
        "Process Control",
        ("Honeywell International", "Emerson Electric Co.", "Yokogawa Electric"),
        (None,),
    ),
    "Unknown": (0.18, "Unclassified", "N/A", (None,), (None, "Linux")),
}
FIRMWARE_TYPES = {"PLC", "IED", "RTU", "DCS Controller"}
#: name -> (protocol id, port, commands); ids are what the sensor's protocol catalogue numbers.
PROTOCOLS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "Modbus": (12, 502, ("Read Coils", "Read Holding Registers", "Write Single Register")),
    "Siemens S7": (31, 102, ("Read Var", "Write Var", "Download Block")),
    "EtherNet/IP": (44, 44818, ("Get Attribute Single", "Set Attribute Single")),
    "Omron FINS": (62, 9600, ("Memory Area Read", "Memory Area Write")),
    "DNP3": (20, 20000, ("Read", "Select", "Operate")),
    "IEC60870-5-104": (104, 2404, ("Interrogation", "Single Command")),
    "IEC61850 MMS": (85, 102, ("Read", "Write", "GetNameList")),
    "OPC UA": (48, 4840, ("Browse", "Read", "Write")),
    "HTTP": (2, 80, ()),
    "SMB": (7, 445, ()),
    "RDP": (9, 3389, ()),
    "SNMP": (5, 161, ("Get", "GetNext")),
}
PROTOCOLS_BY_TYPE = {
    "PLC": ("Modbus", "Siemens S7", "EtherNet/IP", "Omron FINS", "HTTP"),
    "HMI": ("Modbus", "Siemens S7", "EtherNet/IP", "OPC UA", "RDP"),
    "Engineering Station": ("Siemens S7", "EtherNet/IP", "SMB", "RDP", "HTTP"),
    "Historian": ("OPC UA", "SMB", "HTTP"),
    "Switch": ("SNMP", "HTTP"),
    "Router": ("SNMP", "HTTP"),
    "IED": ("IEC61850 MMS", "DNP3", "Modbus"),
    "RTU": ("DNP3", "IEC60870-5-104", "Modbus"),
    "DCS Controller": ("OPC UA", "Modbus", "EtherNet/IP"),
    "Unknown": ("HTTP", "SNMP", "SMB"),
}
MDE_OS = {
    "Windows10": "Windows 10 64",
    "Windows11": "Windows 11 64",
    "WindowsServer2016": "Windows Server 2016",
    "WindowsServer2019": "Windows Server 2019",
    "WindowsServer2022": "Windows Server 2022",
}
CVE_TEMPLATES = (
    "A buffer overflow in the {what} allows remote attackers to execute arbitrary code.",
    "Improper input validation in the {what} allows a denial of service via crafted packets.",
    "The {what} uses hard-coded credentials, which allows attackers to gain access.",
    "Race condition in the {what} allows local users to gain privileges.",
    "Missing authentication in the {what} allows attackers to change the configuration.",
)
