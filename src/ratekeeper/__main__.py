from ratekeeper.cli.main import main

main()
