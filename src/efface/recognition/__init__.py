"""Face recognition for selective anonymization: telling a data subject's faces from everyone else's."""
