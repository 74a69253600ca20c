from endpoint_forensics.cli import main

main()
