"""Readers of the evidence: Exchange and IIS text logs, event logs, file trees and archives."""
