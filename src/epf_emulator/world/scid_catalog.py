"""The secure-configuration catalogue: which SCIDs exist and which a device of each platform reports.

Owns the agent-health SCIDs of each platform family (from
shared/reference/original-connector.md), the other configurations a device reports (a
collector of agent health must ignore them; they make up the 20-30 configurations per device
of the secure-configuration export), each SCID's name, category, subcategory and impact, the
rule sets the history generator (``world.secure_config_history``) applies, and the hunting
table's columns.

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

__all__ = [
    "ASSESSMENT_COLUMNS",
    "HEALTH_SCIDS",
    "IMPAIRED_SCIDS",
    "NEEDS_ACTIVE_AV",
    "OTHER_SCIDS",
    "PUA_SCIDS",
    "SCID_CATALOG",
    "SENSOR_DATA_SCIDS",
    "SIGNATURE_SCIDS",
]

#: Agent-health SCIDs per platform family, in the original workbook's test order.
HEALTH_SCIDS: dict[str, tuple[str, ...]] = {
    "Windows": (
        "scid-2000",
        "scid-2001",
        "scid-2002",
        "scid-2003",
        "scid-2010",
        "scid-2011",
        "scid-2012",
        "scid-91",
        "scid-2013",
        "scid-2014",
        "scid-2016",
    ),
    "macOS": (
        "scid-5001",
        "scid-5002",
        "scid-5092",
        "scid-5095",
        "scid-5090",
        "scid-5093",
        "scid-5091",
        "scid-5094",
    ),
    "Linux": ("scid-6001", "scid-6002", "scid-6095", "scid-6090", "scid-6091", "scid-6094"),
}
# Other configurations each device reports; a collector of agent health must ignore them.
OTHER_SCIDS: dict[str, tuple[str, ...]] = {
    "Windows": tuple(
        "scid-10 scid-39 scid-44 scid-74 scid-89 scid-96 scid-20000 scid-2021 scid-4 scid-15"
        " scid-20 scid-33 scid-45 scid-55 scid-68 scid-75 scid-80 scid-86 scid-92 scid-98"
        " scid-2090 scid-2500 scid-2501 scid-2502 scid-3001".split()
    ),
    "macOS": tuple(
        "scid-5003 scid-5010 scid-5026 scid-5089 scid-5099 scid-20000 scid-5004 scid-5005"
        " scid-5011 scid-5012 scid-5013 scid-5014 scid-5015 scid-5016 scid-5017 scid-5018"
        " scid-5019 scid-5020 scid-5021 scid-5022 scid-5023".split()
    ),
    "Linux": tuple(
        "scid-6003 scid-6010 scid-6030 scid-6088 scid-6099 scid-20000 scid-6004 scid-6011"
        " scid-6012 scid-6013 scid-6020 scid-6021 scid-6031 scid-6040 scid-6041 scid-6042"
        " scid-6050 scid-6051 scid-6060 scid-6061 scid-6070".split()
    ),
}

_SC = "Security controls"  # the category of every health test
#: ConfigurationId -> (name, category, subcategory, impact).
SCID_CATALOG: dict[str, tuple[str, str, str, float]] = {
    "scid-2000": ("Turn on Microsoft Defender for Endpoint sensor", _SC, "EDR", 9.0),
    "scid-2001": ("Fix Microsoft Defender for Endpoint sensor data collection", _SC, "EDR", 9.0),
    "scid-2002": ("Fix Microsoft Defender for Endpoint impaired communications", _SC, "EDR", 8.0),
    "scid-2003": ("Turn on Tamper Protection", _SC, "EDR", 8.0),
    "scid-2010": ("Turn on Microsoft Defender Antivirus", _SC, "Antivirus", 9.0),
    "scid-2011": ("Update Microsoft Defender Antivirus definitions", _SC, "Antivirus", 8.0),
    "scid-2012": ("Turn on real-time protection", _SC, "Antivirus", 9.0),
    "scid-91": ("Turn on behavior monitoring", _SC, "Antivirus", 7.0),
    "scid-2013": ("Turn on PUA protection in block mode", _SC, "Antivirus", 5.0),
    "scid-2014": ("Fix Microsoft Defender Antivirus reporting", _SC, "Antivirus", 6.0),
    "scid-2016": ("Turn on cloud-delivered protection", _SC, "Antivirus", 7.0),
    "scid-5001": (
        "Fix Microsoft Defender for Endpoint sensor data collection (macOS)",
        _SC,
        "EDR",
        9.0,
    ),
    "scid-5002": (
        "Fix Microsoft Defender for Endpoint impaired communications (macOS)",
        _SC,
        "EDR",
        8.0,
    ),
    "scid-5092": ("Turn on Tamper Protection (macOS)", _SC, "EDR", 8.0),
    "scid-5095": ("Update Microsoft Defender Antivirus definitions (macOS)", _SC, "Antivirus", 8.0),
    "scid-5090": ("Turn on real-time protection (macOS)", _SC, "Antivirus", 9.0),
    "scid-5093": ("Turn on behavior monitoring (macOS)", _SC, "Antivirus", 7.0),
    "scid-5091": ("Turn on PUA protection in block mode (macOS)", _SC, "Antivirus", 5.0),
    "scid-5094": ("Turn on cloud-delivered protection (macOS)", _SC, "Antivirus", 7.0),
    "scid-6001": (
        "Fix Microsoft Defender for Endpoint sensor data collection (Linux)",
        _SC,
        "EDR",
        9.0,
    ),
    "scid-6002": (
        "Fix Microsoft Defender for Endpoint impaired communications (Linux)",
        _SC,
        "EDR",
        8.0,
    ),
    "scid-6095": ("Update Microsoft Defender Antivirus definitions (Linux)", _SC, "Antivirus", 8.0),
    "scid-6090": ("Turn on real-time protection (Linux)", _SC, "Antivirus", 9.0),
    "scid-6091": ("Turn on PUA protection in block mode (Linux)", _SC, "Antivirus", 5.0),
    "scid-6094": ("Turn on cloud-delivered protection (Linux)", _SC, "Antivirus", 7.0),
    "scid-10": ("Disable 'Autoplay' for all drives", "OS", "Autoplay", 6.0),
    "scid-39": (
        "Set 'Minimum password length' to '14 or more characters'",
        "Accounts",
        "Password Policy",
        4.0,
    ),
    "scid-44": ("Disable SMBv1 client driver", "Network", "SMB", 7.0),
    "scid-74": ("Disable 'Allow Basic authentication' for WinRM Client", "Network", "WinRM", 5.0),
    "scid-89": (
        "Enable 'Microsoft network client: Digitally sign communications (always)'",
        "Network",
        "SMB",
        5.0,
    ),
    "scid-96": ("Disable Solicited Remote Assistance", "OS", "Remote Assistance", 3.0),
    "scid-2021": ("Turn on Microsoft Defender Firewall", _SC, "Firewall", 7.0),
    "scid-20000": (
        "Onboard devices to Microsoft Defender for Endpoint",
        _SC,
        "Onboard Devices",
        9.0,
    ),
    "scid-5003": ("Turn on network protection (macOS)", _SC, "Network", 6.0),
    "scid-5010": ("Turn on FileVault disk encryption", "OS", "Encryption", 7.0),
    "scid-5026": ("Turn on the macOS firewall", "Network", "Firewall", 6.0),
    "scid-5089": ("Turn on automatic macOS updates", "OS", "Updates", 5.0),
    "scid-5099": ("Disable Bluetooth sharing", "OS", "Sharing", 3.0),
    "scid-6003": ("Turn on network protection (Linux)", _SC, "Network", 6.0),
    "scid-6010": ("Disable SSH root login", "Accounts", "SSH", 7.0),
    "scid-6030": ("Ensure auditd service is enabled", "OS", "Auditing", 5.0),
    "scid-6088": (
        "Ensure permissions on /etc/shadow are configured",
        "OS",
        "File Permissions",
        6.0,
    ),
    "scid-6099": ("Disable USB storage", "OS", "Devices", 4.0),
}
_MORE = r"""
scid-4 | Set 'Minimum password age' to '1 or more day(s)' | Accounts | Password Policy | 3
scid-15 | Disable 'Enumerate administrator accounts on elevation' | Accounts | User Account Control | 5
scid-20 | Set User Account Control (UAC) to automatically deny elevation requests | Accounts | User Account Control | 6
scid-33 | Disable 'Continue running background apps when Google Chrome is closed' | Application | Google Chrome | 2
scid-45 | Disable SMBv1 server | Network | SMB | 7
scid-55 | Set 'Interactive logon: Machine inactivity limit' to '900 or fewer second(s)' | OS | Logon | 4
scid-68 | Enable 'Require additional authentication at startup' | OS | BitLocker | 6
scid-75 | Disable 'Allow Basic authentication' for WinRM Service | Network | WinRM | 5
scid-80 | Enable Local Admin password management | Accounts | LAPS | 8
scid-86 | Disable 'Anonymous enumeration of shares' | Network | Anonymous access | 5
scid-92 | Enable 'Local Security Authority (LSA) protection' | Security controls | Credential protection | 8
scid-98 | Turn on Microsoft Defender Application Guard managed mode | Security controls | Application Guard | 4
scid-2090 | Turn on Microsoft Defender Credential Guard | Security controls | Credential protection | 7
scid-2500 | Block Office applications from creating child processes | Security controls | Attack Surface Reduction | 7
scid-2501 | Block executable content from email client and webmail | Security controls | Attack Surface Reduction | 7
scid-2502 | Block credential stealing from the Windows local security authority subsystem | Security controls | Attack Surface Reduction | 8
scid-3001 | Encrypt all BitLocker-supported drives | OS | BitLocker | 8
scid-5004 | Turn on Gatekeeper | OS | Gatekeeper | 7
scid-5005 | Turn on System Integrity Protection | OS | System Integrity Protection | 8
scid-5011 | Disable automatic login | Accounts | Login | 6
scid-5012 | Require a password to wake the computer from sleep or screen saver | Accounts | Login | 5
scid-5013 | Disable remote Apple events | Network | Sharing | 4
scid-5014 | Disable screen sharing | Network | Sharing | 4
scid-5015 | Disable remote login | Network | Sharing | 5
scid-5016 | Turn on firewall stealth mode | Network | Firewall | 4
scid-5017 | Disable the guest account | Accounts | Accounts | 5
scid-5018 | Turn on automatic installation of security updates | OS | Updates | 6
scid-5019 | Start the screen saver within 20 minutes of inactivity | OS | Screen lock | 3
scid-5020 | Disable AirDrop | Network | Sharing | 3
scid-5021 | Turn on Secure Keyboard Entry in Terminal | Application | Terminal | 2
scid-5022 | Disable printer sharing | Network | Sharing | 3
scid-5023 | Disable Bluetooth discoverability | OS | Bluetooth | 2
scid-6004 | Ensure a host firewall (nftables or iptables) is active | Network | Firewall | 6
scid-6011 | Disable SSH password authentication | Accounts | SSH | 6
scid-6012 | Set SSH MaxAuthTries to 4 or less | Accounts | SSH | 4
scid-6013 | Disable SSH X11 forwarding | Network | SSH | 3
scid-6020 | Ensure automatic security updates are enabled | OS | Updates | 6
scid-6021 | Ensure AppArmor or SELinux is enabled | OS | Mandatory access control | 7
scid-6031 | Ensure rsyslog is installed and running | OS | Logging | 3
scid-6040 | Ensure address space layout randomization (ASLR) is enabled | OS | Kernel | 7
scid-6041 | Disable IP forwarding | Network | Kernel | 4
scid-6042 | Do not accept ICMP redirects | Network | Kernel | 3
scid-6050 | Mount /tmp as a separate partition with noexec | OS | File systems | 3
scid-6051 | Ensure permissions on /etc/passwd are configured | OS | File Permissions | 5
scid-6060 | Ensure no account has an empty password | Accounts | Accounts | 9
scid-6061 | Ensure sudo logs every command | Accounts | Sudo | 3
scid-6070 | Remove the telnet client | Network | Services | 4
"""
for _line in _MORE.strip().splitlines():
    _scid, _name, _category, _subcategory, _impact = (cell.strip() for cell in _line.split("|"))
    SCID_CATALOG[_scid] = (_name, _category, _subcategory, float(_impact))

#: Column name -> DuckDB type, in the documented order (defender-apis.md B.4).
ASSESSMENT_COLUMNS: dict[str, str] = {
    "DeviceId": "VARCHAR",
    "DeviceName": "VARCHAR",
    "OSPlatform": "VARCHAR",
    "Timestamp": "TIMESTAMPTZ",
    "ConfigurationId": "VARCHAR",
    "ConfigurationCategory": "VARCHAR",
    "ConfigurationSubcategory": "VARCHAR",
    "ConfigurationImpact": "DOUBLE",
    "IsCompliant": "BOOLEAN",
    "IsApplicable": "BOOLEAN",
    "Context": "JSON",
    "IsExpectedUserImpact": "BOOLEAN",
}
SIGNATURE_SCIDS = frozenset({"scid-2011", "scid-5095", "scid-6095"})
SENSOR_DATA_SCIDS = frozenset({"scid-2001", "scid-5001", "scid-6001"})
IMPAIRED_SCIDS = frozenset({"scid-2002", "scid-5002", "scid-6002"})
#: Not applicable when Defender Antivirus is not the active AV (passive, EDR in block mode...).
NEEDS_ACTIVE_AV = frozenset({"scid-2010", "scid-2012", "scid-91", "scid-2013"})
PUA_SCIDS = frozenset({"scid-2013", "scid-6091"})
