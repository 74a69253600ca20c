"""Emulated Microsoft Entra ID: token endpoints, client authentication, managed identity.

Modules: ``entra`` (the token endpoints, the tokens and ``authorize``, which every API calls
first), ``client_auth`` (who may ask for a token: client secrets and certificate
assertions) and ``managed_identity`` (the App Service managed identity endpoint).

Imports only ``common`` modules of the emulator.
"""
